#!/usr/bin/env bash
# docker-entrypoint.sh of the postgres stand-in (docker/local/postgres.Dockerfile): what the official image's
# script does for the stack, read from docker-library/postgres 15/bookworm/docker-entrypoint.sh --
#   * `postgres ...` (or flags only): as root, make PGDATA and /var/run/postgresql the postgres user's and run
#     this script again as postgres; the *_FILE variables are read first, as root (a 0600 secret of another
#     uid is readable there), and handed on in the environment;
#   * an empty PGDATA is initialised: initdb with POSTGRES_USER as the superuser and POSTGRES_PASSWORD as its
#     password, `host all all all scram-sha-256` in pg_hba.conf, listen_addresses '*'; POSTGRES_DB is created
#     by a temporary server that listens on no TCP address (so a TCP health check fails until the real start);
#   * anything else is exec'd as it is.
set -Eeuo pipefail

file_env() {  # VAR [default]: VAR from VAR or from the file VAR_FILE names (not both)
	local var="$1" fileVar="${1}_FILE" def="${2:-}" val
	if [ "${!var:-}" ] && [ "${!fileVar:-}" ]; then
		echo >&2 "error: both $var and $fileVar are set (but are exclusive)"
		exit 1
	fi
	val="$def"
	if [ "${!var:-}" ]; then
		val="${!var}"
	elif [ "${!fileVar:-}" ]; then
		val="$(< "${!fileVar}")"
	fi
	export "$var"="$val"
	unset "$fileVar"
}

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi
if [ "$1" != 'postgres' ]; then
	exec "$@"
fi

file_env POSTGRES_PASSWORD
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "$POSTGRES_USER"
file_env POSTGRES_INITDB_ARGS
: "${PGDATA:=/var/lib/postgresql/data}"

if [ "$(id -u)" = '0' ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chmod 00700 "$PGDATA"
	find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
	chown postgres /var/run/postgresql
	chmod 03775 /var/run/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "$POSTGRES_PASSWORD" ]; then
		echo >&2 "error: the database is uninitialized and no superuser password is given (POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE)"
		exit 1
	fi
	# shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words, as upstream passes it
	initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS >/dev/null
	printf '\nhost all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
	printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
	PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD" \
		pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
	if [ "$POSTGRES_DB" != 'postgres' ]; then
		PGPASSWORD="$POSTGRES_PASSWORD" psql -v ON_ERROR_STOP=1 -q --username "$POSTGRES_USER" --no-password \
			--dbname postgres --set db="$POSTGRES_DB" <<-'SQL'
			CREATE DATABASE :"db" ;
		SQL
	fi
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	echo 'PostgreSQL init process complete; ready for start up.'
fi
unset POSTGRES_PASSWORD PGPASSWORD
exec "$@"
