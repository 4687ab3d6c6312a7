//! Black-box tests of the identity service: real servers on ephemeral ports, real gRPC, each
//! test on its own database (SQLite, or PostgreSQL with `TEST_DATABASE_URL`).

#![allow(clippy::unwrap_used)]

mod accounts_facade;
mod attacks;
mod backup;
mod binaries;
mod browser;
mod email;
mod faults;
mod graphql;
mod grpc_auth;
mod grpc_sessions;
mod grpc_users;
mod http_routes;
mod janitor;
mod keys;
mod other_languages;
mod pages;
mod proxies;
mod replicas;
mod social;
mod storage;
mod subscriptions;
mod tls;
