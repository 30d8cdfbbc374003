//! The workspace's single integration-test binary (see ARCHITECTURE.md, "Tests").
//!
//! Modules run the real `tenancy` binary against real temporary Git repositories and, for the
//! service checks, against the real PostgreSQL, S3 and Kafka-protocol servers started by
//! `scripts/services.sh`.

mod api;
mod apply;
mod architecture;
mod daemon;
mod events;
mod integrity;
mod plane_postgres;
mod plane_redis;
mod planes;
mod policy;
mod reliability;
mod sandbox;
mod seed_api;
mod services;
mod source;
mod store;
mod support;
mod validate;
