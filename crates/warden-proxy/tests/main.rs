//! The integration tests of `warden-proxy`, in one test binary: one module per file beside this one.
//! (One binary links the crate and its dependencies once, where a binary per file linked
//! them once per file: far less disk and link time.) Run one file's tests with
//! `cargo nextest run -p warden-proxy -E 'test(/^<file>::/)'`.

mod mesh_support;

mod auth_apikey_policy;
mod auth_attacks;
mod auth_identity;
mod auth_introspection;
mod auth_jwks;
mod auth_jwt;
mod auth_revocation;
mod auth_rules;
mod authority_rotation;
mod console_api;
mod forwarding_hygiene;
mod framing_limits;
mod grpc;
mod grpc_interop;
mod idle_release;
mod listener_routes;
mod mesh;
mod mesh_interop;
mod observability;
mod parser_properties;
mod pipeline;
mod rate_limits;
mod rate_limits_redis;
mod reload_ops;
mod resilience;
mod routing_forwarding;
mod security_events;
mod smoke;
mod streaming;
mod tls_http2;
mod tls_rotation;
mod upstream_conns;
mod upstream_pool;
mod websocket;
mod websocket_interop;
