# floodwatch's .rpm, after removing or upgrading: systemd re-reads its units; an upgrade restarts
# a running floodwatch on the new binary.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then systemctl try-restart floodwatch.service >/dev/null 2>&1 || :; fi
fi
