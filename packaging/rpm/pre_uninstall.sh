# floodwatch's .rpm, before removing ($1 = 0) as opposed to upgrading: stop and disable it.
if [ "$1" = 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now floodwatch.service >/dev/null 2>&1 || :
fi
