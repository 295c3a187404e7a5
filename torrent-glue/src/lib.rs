//! Engine-agnostic glue between a BitTorrent engine, the paid-streaming extension and a payment channel.

#![forbid(unsafe_code)]
#![cfg_attr(not(fuzzing), deny(missing_docs))]
#![deny(rustdoc::broken_intra_doc_links)]
