# floodwatch's .rpm, after installing: the state and log folders, and systemd told of the unit
# (not enabled: the admin reviews the config first).
mkdir -p /var/lib/floodwatch /var/log/floodwatch
chmod 0700 /var/lib/floodwatch
chmod 0750 /var/log/floodwatch
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi
