#!/bin/bash
# Stand-in healthcheck: succeed when the broker accepts connections on the --bootstrap-server address.
server=localhost:9092
while [ $# -gt 0 ]; do
  case "$1" in --bootstrap-server) server="$2"; shift 2 ;; *) shift ;; esac
done
host="${server%:*}"; port="${server##*:}"
exec 3<>"/dev/tcp/${host}/${port}"
