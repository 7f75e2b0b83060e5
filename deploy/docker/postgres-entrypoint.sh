#!/usr/bin/env bash
# First start: a cluster owned by `postgres`, role $POSTGRES_USER with $POSTGRES_PASSWORD
# (scram-sha-256 over the network), one database per name in $POSTGRES_DATABASES.
set -euo pipefail
: "${POSTGRES_USER:=ct}" "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
: "${POSTGRES_DATABASES:=dagster mlflow}"
# A base debootstrapped before deploy/build-base-image.sh set `/` to 0755 has it at 0700
# (mktemp's), and the `postgres` user could run nothing. `chmod /` in a Dockerfile RUN is not
# kept in the layer, so the container's own root is fixed here, as root, before anything.
chmod 755 /
mkdir -p "$PGDATA" /run/postgresql
chown -R postgres:postgres "$PGDATA" /run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s' "$POSTGRES_PASSWORD" >/tmp/pwfile
  chown postgres /tmp/pwfile
  runuser -u postgres -- initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile \
    --auth-local=trust --auth-host=scram-sha-256
  rm -f /tmp/pwfile
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  runuser -u postgres -- pg_ctl -D "$PGDATA" -w start -o "-c listen_addresses=''"
  for db in $POSTGRES_DATABASES; do
    runuser -u postgres -- createdb -U "$POSTGRES_USER" "$db"
  done
  runuser -u postgres -- pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec runuser -u postgres -- postgres -D "$PGDATA" -c listen_addresses='*' -c max_connections=200
