//! proptest strategies and table checks shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt::Debug;

use bytes::Bytes;
use paid_wire::bencode::Value;
use paid_wire::extended::ExtendedHandshake;
use paid_wire::handshake::{Handshake, Reserved};
use paid_wire::message::{BlockRequest, Message, id};
use paid_wire::pse::{ChannelId, PseMessage, command};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

pub fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

pub fn block_request() -> impl Strategy<Value = BlockRequest> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(i, b, l)| BlockRequest::new(i, b, l))
}

/// Ids that decode to `Message::Unknown`.
pub fn unknown_id() -> impl Strategy<Value = u8> {
    any::<u8>().prop_filter(
        "known id",
        |i| !matches!(*i, 0..=9 | id::SUGGEST..=id::ALLOWED_FAST | id::EXTENDED),
    )
}

pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::KeepAlive),
        Just(Message::Choke),
        Just(Message::Unchoke),
        Just(Message::Interested),
        Just(Message::NotInterested),
        any::<u32>().prop_map(Message::Have),
        bytes(64).prop_map(Message::Bitfield),
        block_request().prop_map(Message::Request),
        (any::<u32>(), any::<u32>(), bytes(300)).prop_map(|(index, begin, data)| Message::Piece {
            index,
            begin,
            data
        }),
        block_request().prop_map(Message::Cancel),
        any::<u16>().prop_map(Message::Port),
        any::<u32>().prop_map(Message::Suggest),
        Just(Message::HaveAll),
        Just(Message::HaveNone),
        block_request().prop_map(Message::Reject),
        any::<u32>().prop_map(Message::AllowedFast),
        (any::<u8>(), bytes(64)).prop_map(|(id, payload)| Message::Extended { id, payload }),
        (unknown_id(), bytes(64)).prop_map(|(id, payload)| Message::Unknown { id, payload }),
    ]
}

pub fn handshake() -> impl Strategy<Value = Handshake> {
    (any::<[u8; 8]>(), any::<[u8; 20]>(), any::<[u8; 20]>())
        .prop_map(|(r, i, p)| Handshake::new(Reserved(r), i, p))
}

pub fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::Int),
        vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::List),
            btree_map(vec(any::<u8>(), 0..6), inner, 0..4).prop_map(Value::Dict),
        ]
    })
}

const KNOWN_KEYS: [&[u8]; 6] = [b"m", b"metadata_size", b"p", b"reqq", b"v", b"yourip"];

pub fn ext_handshake() -> impl Strategy<Value = ExtendedHandshake> {
    (
        btree_map("[a-zA-Z_]{1,16}", any::<u8>(), 0..6),
        proptest::option::of("\\PC{0,12}"),
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(prop_oneof![
            any::<[u8; 4]>().prop_map(|a| a.to_vec()),
            any::<[u8; 16]>().prop_map(|a| a.to_vec())
        ]),
        proptest::option::of(0..=i64::MAX as u64),
        btree_map(vec(any::<u8>(), 1..12), value(), 0..4),
    )
        .prop_map(|(m, v, p, reqq, yourip, metadata_size, mut extra)| {
            extra.retain(|k, _| !KNOWN_KEYS.contains(&k.as_slice()));
            ExtendedHandshake {
                m,
                v,
                p,
                reqq,
                yourip,
                metadata_size,
                extra,
            }
        })
}

pub fn channel_id() -> impl Strategy<Value = ChannelId> {
    any::<[u8; 32]>().prop_map(ChannelId)
}

pub fn pse_message() -> impl Strategy<Value = PseMessage> {
    let known = [
        command::STOP,
        command::START,
        command::PERMANENT_STOP,
        command::ACK,
        command::MESSAGE,
    ];
    prop_oneof![
        proptest::option::of(channel_id()).prop_map(|channel_id| PseMessage::Stop { channel_id }),
        Just(PseMessage::Start),
        proptest::option::of(channel_id())
            .prop_map(|channel_id| PseMessage::PermanentStop { channel_id }),
        Just(PseMessage::Ack),
        "\\PC{0,200}".prop_map(|message| PseMessage::Message { message }),
        (
            "[a-z-]{0,16}".prop_filter("known command", move |c| !known.contains(&c.as_str())),
            proptest::option::of(value())
        )
            .prop_map(|(command, data)| PseMessage::Unknown { command, data }),
    ]
}

/// Builds a dictionary value from `(key, value)` pairs.
pub fn dict<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// Asserts that `decode` rejects each input of `cases` with exactly its error (the input, as
/// text, in the failure message).
pub fn assert_decode_errors<'a, T, E>(
    decode: impl Fn(&[u8]) -> Result<T, E>,
    cases: impl IntoIterator<Item = (&'a [u8], impl Borrow<E>)>,
) where
    T: Debug + PartialEq,
    E: Debug + PartialEq,
{
    for (wire, err) in cases {
        assert_eq!(
            decode(wire).as_ref(),
            Err(err.borrow()),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
}
