//! Shared test support: the anvil harness and backend-agnostic chain scenarios.

pub mod anvil;
pub mod scenarios;
