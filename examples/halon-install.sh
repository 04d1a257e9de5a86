#!/bin/sh
# Halon as a `type: command` installer (documented, not run by the tests: no Halon here).
#
# rollover writes the key and chain for one slot into the installer's directory, then runs this
# script with, in its environment (file names, never key material):
#   ROLLOVER_HOST, ROLLOVER_PORT, ROLLOVER_ALGORITHM, ROLLOVER_KEY_FILE, ROLLOVER_CHAIN_FILE
# A non-zero exit makes rollover put the previous files back and run the script once more, so
# the script must (re)deploy whatever the files hold now, and be idempotent.
#
#   installers:
#     halon:
#       type: command
#       directory: /var/lib/rollover-halon     # 0700, root
#       key_name: "{host}.{algorithm}.key"
#       chain_name: "{host}.{algorithm}.crt"
#       command: [/usr/local/sbin/rollover-halon-install]
#
# Two Halon generations; pick the block for yours and check it against your Halon's manual:
#  - Halon 5 "smtpd" on Linux: the pki resource (smtpd.yaml, resources -> pki -> private) points
#    at a certificate and private key file: copy the files there and reload the configuration.
#  - The appliance the how-to configures in its web UI ("Certificates and keys"): upload the
#    chain with the key through its API (HALON_API, HALON_CURL_CONFIG below).
# The seed's other Halon settings stay as the how-to says: STARTTLS on the inbound listener with
# this certificate ID; for outbound, "DANE" (or "DANE (required)") on the transport label or
# SetTLS(["tls" => "dane"]) in pre-delivery; DNSSEC on Halon's resolver.
set -eu
: "${ROLLOVER_KEY_FILE:?run by rollover}" "${ROLLOVER_CHAIN_FILE:?run by rollover}"
# one certificate ID per host and algorithm; Halon IDs: lowercase letters and digits only
id=$(printf '%s%s' "$ROLLOVER_HOST" "$ROLLOVER_ALGORITHM" | tr -cd 'a-z0-9')

if [ -n "${HALON_SMTPD_PKI_DIR:-}" ]; then
    # Halon 5 smtpd: files referenced by the pki resource "$id"
    install -m 0600 "$ROLLOVER_KEY_FILE" "$HALON_SMTPD_PKI_DIR/$id.key"
    install -m 0644 "$ROLLOVER_CHAIN_FILE" "$HALON_SMTPD_PKI_DIR/$id.crt"
    exec halonctl config reload
fi

# Appliance: upload chain + key (base64) under "$id" through the API. The credentials stay in a
# 0600 curl config file (a line `user = "admin:PASSWORD"`), never on a command line.
: "${HALON_API:?set HALON_API (https://halon.example.nl/...) or HALON_SMTPD_PKI_DIR}"
pem=$(cat "$ROLLOVER_CHAIN_FILE" "$ROLLOVER_KEY_FILE" | base64 -w 0)
printf '{"key":"pki__%s","params":{"name":"%s (rollover)","key":"%s"}}' "$id" "$ROLLOVER_HOST" "$pem" |
    curl --fail --silent --show-error --config "${HALON_CURL_CONFIG:?0600 curl config}" \
        --data-binary @- "$HALON_API"
