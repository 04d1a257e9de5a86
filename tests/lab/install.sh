#!/usr/bin/env bash
# Install the Debian packages the test lab needs (BIND, Knot, Pebble, Postfix, Dovecot, DNS/SMTP
# tools) and Exim. Exim's Debian packages conflict with postfix, so exim4-daemon-light (+ base,
# config) is downloaded and unpacked into $EXIM_ROOT (default /opt/rollover-lab/exim4), never
# installed; it needs libidn12 and a Debian-exim system user/group, which this script creates.
#
# Idempotent and fast when everything is present (one dpkg-query, no apt). Otherwise: one
# `apt-get update`, one `apt-get install`, with postfix preseeded to "No configuration" and a
# policy-rc.d that forbids package scripts from starting daemons. Afterwards no system daemon of
# these packages is left running: the lab starts its own servers as plain child processes.
# ROLLOVER_LAB_FORCE_INSTALL=1 runs the apt path even when everything is present.
set -euo pipefail

PACKAGES=(bind9 bind9-utils dnsutils knot knot-dnsutils pebble postfix ldnsutils swaks
          libnet-ssleay-perl iproute2 openssl
          pdns-server pdns-backend-sqlite3 dns-root-data
          dovecot-core dovecot-imapd dovecot-pop3d libidn12)
EXIM_DEBS=(exim4-daemon-light exim4-base exim4-config)
EXIM_ROOT=${EXIM_ROOT:-/opt/rollover-lab/exim4}

die() { echo "install.sh: $*" >&2; exit 1; }

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this installer needs Debian/Ubuntu"

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ "$status" == ii* ]] || missing+=("$pkg")
done
have_exim() { [[ -x "$EXIM_ROOT/usr/sbin/exim4" ]] && getent group Debian-exim >/dev/null; }
if [[ ${#missing[@]} -eq 0 && -z "${ROLLOVER_LAB_FORCE_INSTALL:-}" ]] && have_exim; then
    echo "install.sh: all lab packages present"
    exit 0
fi
echo "install.sh: installing: ${missing[*]:-(forced) ${PACKAGES[*]}}"

SUDO=()
if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "must run as root (or with sudo available) to install: ${missing[*]}"
    sudo -n true 2>/dev/null || die "sudo needs a password; run as root to install: ${missing[*]}"
    SUDO=(sudo -n)
fi

# Keep package scripts from starting daemons. Reuse an existing policy-rc.d (e.g. Docker's
# `exit 101`); otherwise put ours in place for the duration of the install only.
POLICY=/usr/sbin/policy-rc.d
OUR_POLICY=0
cleanup() {
    if [[ $OUR_POLICY -eq 1 ]]; then "${SUDO[@]}" rm -f "$POLICY"; fi
}
trap cleanup EXIT
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\n# temporary, from rollover tests/lab/install.sh\nexit 101\n' \
        | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 0755 "$POLICY"
    OUR_POLICY=1
fi

printf '%s\n' \
    'postfix postfix/main_mailer_type select No configuration' \
    'postfix postfix/mailname string lab.invalid' \
    | "${SUDO[@]}" debconf-set-selections \
    || die "debconf-set-selections failed (is debconf installed?)"

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q \
    || die "apt-get update failed"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends --no-upgrade "${PACKAGES[@]}" \
    || die "apt-get install failed for: ${missing[*]}"

# Exim: unpacked, not installed (the package would remove postfix). The daemon runs as
# Debian-exim, as on Debian.
if ! have_exim || [[ -n "${ROLLOVER_LAB_FORCE_INSTALL:-}" ]]; then
    debs=$(mktemp -d)
    chmod 0755 "$debs"  # apt-get download runs as _apt
    (cd "$debs" && "${SUDO[@]}" apt-get download -q "${EXIM_DEBS[@]}") \
        || die "apt-get download failed for: ${EXIM_DEBS[*]}"
    "${SUDO[@]}" mkdir -p "$EXIM_ROOT"
    for deb in "$debs"/*.deb; do "${SUDO[@]}" dpkg -x "$deb" "$EXIM_ROOT"; done
    "${SUDO[@]}" rm -rf "$debs"
    getent group Debian-exim >/dev/null || "${SUDO[@]}" groupadd --system Debian-exim
    getent passwd Debian-exim >/dev/null || "${SUDO[@]}" useradd --system -g Debian-exim \
        -d /var/spool/exim4 -s /usr/sbin/nologin Debian-exim
    "$EXIM_ROOT/usr/sbin/exim4" -bV -C /dev/null >/dev/null 2>&1 \
        || die "unpacked Exim in $EXIM_ROOT does not run (missing library?)"
fi

# Belt and braces: if a package still started its system daemon (no policy-rc.d honoured, or a
# systemd that ignores it), stop exactly that system instance - never a lab's child process.
stop_service() {
    local unit=$1
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        "${SUDO[@]}" systemctl stop "$unit" >/dev/null 2>&1 || true
        "${SUDO[@]}" systemctl disable "$unit" >/dev/null 2>&1 || true
    fi
}
stop_pidfile() {
    local pidfile=$1 pid
    [[ -r "$pidfile" ]] || return 0
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n "$pid" ]] && "${SUDO[@]}" kill -TERM "$pid" 2>/dev/null || true
}
for unit in named bind9 knot postfix pdns dovecot; do stop_service "$unit"; done
stop_pidfile /run/named/named.pid
stop_pidfile /run/knot/knot.pid
stop_pidfile /var/spool/postfix/pid/master.pid
stop_pidfile /run/pdns/pdns.pid
stop_pidfile /run/dovecot/master.pid

still=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ "$status" == ii* ]] || still+=("$pkg")
done
[[ ${#still[@]} -eq 0 ]] || die "packages still not installed: ${still[*]}"
have_exim || die "Exim is not unpacked in $EXIM_ROOT"
echo "install.sh: done"
