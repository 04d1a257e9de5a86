"""Installers and hooks: Postfix, Exim, generic command, certbot deploy hook (rollover.hooks)."""
