-- One database per CRM service (docker-compose.yml mounts this into the PostgreSQL
-- container's /docker-entrypoint-initdb.d). It runs once, as POSTGRES_USER, when the
-- data volume is empty; after adding a service, create its database by hand or start
-- over with `docker compose down -v`.
CREATE DATABASE gateway;
CREATE DATABASE contacts;
CREATE DATABASE sales;
CREATE DATABASE support;
CREATE DATABASE marketing;
CREATE DATABASE notifications;
