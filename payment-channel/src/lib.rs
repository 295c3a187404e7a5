//! A transport-agnostic, two-party, unidirectional payment channel, byte-compatible with the
//! Nitro v2 contracts (`@statechannels/nitro-protocol@2.0.1-alpha.6`).

#![forbid(unsafe_code)]
#![cfg_attr(not(fuzzing), deny(missing_docs))]
#![deny(rustdoc::broken_intra_doc_links)]
