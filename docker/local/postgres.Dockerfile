# Stand-in for postgres:15.8-bookworm where no registry is reachable.
# upstream: postgres:15.8-bookworm -- https://github.com/docker-library/postgres/blob/03e18d66ddd00497a6a7f8365747fb31386ccba6/15/bookworm/Dockerfile
#   (Dockerfile, docker-entrypoint.sh; PG_VERSION 15.8-1.pgdg120+1); contract: docker/local/README.md
# Kept: user and group postgres 999 (made before the packages can pick other ids), home /var/lib/postgresql;
#   PGDATA /var/lib/postgresql/data (owned by postgres, the volume); /var/run/postgresql 3777; PATH with
#   /usr/lib/postgresql/15/bin (postgres, initdb, pg_ctl, pg_isready, psql, pg_dump); ENTRYPOINT
#   docker-entrypoint.sh, CMD postgres, STOPSIGNAL SIGINT, port 5432; the entrypoint's first start from
#   POSTGRES_PASSWORD(_FILE), POSTGRES_USER, POSTGRES_DB, POSTGRES_INITDB_ARGS (postgres-entrypoint.sh).
# Differs: Debian's postgresql-15 (bookworm's 15.x, not the PGDG 15.8 build); locale C.UTF-8 instead of
#   en_US.utf8; the entrypoint is ours (no /docker-entrypoint-initdb.d scripts, no nss_wrapper for arbitrary
#   --user values, no POSTGRES_HOST_AUTH_METHOD=trust); drops root with setpriv instead of gosu.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN groupadd -r -g 999 postgres \
    && useradd -r -g postgres -u 999 --home-dir=/var/lib/postgresql --shell=/bin/bash postgres \
    && install -d -o postgres -g postgres -m 1777 /var/lib/postgresql \
    && apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql-common \
    && sed -ri 's/#(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
    && apt-get install -y -qq --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 3777 /var/run/postgresql \
    && install -d -o postgres -g postgres -m 1777 /var/lib/postgresql/data
ENV PG_MAJOR=15 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/15/bin \
    PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
