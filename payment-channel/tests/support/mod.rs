//! Shared test support: backend-agnostic chain scenarios (the anvil harness is `payment_channel::test_utils::anvil`).

pub mod hub;
pub mod scenarios;
