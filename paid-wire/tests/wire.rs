//! Hex fixtures for every peer-wire message and the BEP 3 handshake, plus framing errors.

mod common;

use bytes::{Buf, Bytes, BytesMut};
use hex_literal::hex;
use paid_wire::error::DecodeError;
use paid_wire::handshake::{Handshake, PROTOCOL, Reserved};
use paid_wire::message::{BlockRequest, Message, check_frame_len, id};
use proptest::prelude::*;

const REQ: BlockRequest = BlockRequest::new(0x0102_0304, 0x4000, 0x4000);

/// `(message, exact wire bytes)` for every variant.
fn fixtures() -> Vec<(Message, Vec<u8>)> {
    vec![
        (Message::KeepAlive, hex!("00000000").to_vec()),
        (Message::Choke, hex!("00000001 00").to_vec()),
        (Message::Unchoke, hex!("00000001 01").to_vec()),
        (Message::Interested, hex!("00000001 02").to_vec()),
        (Message::NotInterested, hex!("00000001 03").to_vec()),
        (
            Message::Have(0xdead_beef),
            hex!("00000005 04 deadbeef").to_vec(),
        ),
        (
            Message::Bitfield(Bytes::from_static(&hex!("ff80"))),
            hex!("00000003 05 ff80").to_vec(),
        ),
        (
            Message::Request(REQ),
            hex!("0000000d 06 01020304 00004000 00004000").to_vec(),
        ),
        (
            Message::Piece {
                index: 1,
                begin: 0x4000,
                data: Bytes::from_static(b"abc"),
            },
            hex!("0000000c 07 00000001 00004000 616263").to_vec(),
        ),
        (
            Message::Cancel(REQ),
            hex!("0000000d 08 01020304 00004000 00004000").to_vec(),
        ),
        (Message::Port(6881), hex!("00000003 09 1ae1").to_vec()),
        (Message::Suggest(7), hex!("00000005 0d 00000007").to_vec()),
        (Message::HaveAll, hex!("00000001 0e").to_vec()),
        (Message::HaveNone, hex!("00000001 0f").to_vec()),
        (
            Message::Reject(REQ),
            hex!("0000000d 10 01020304 00004000 00004000").to_vec(),
        ),
        (
            Message::AllowedFast(9),
            hex!("00000005 11 00000009").to_vec(),
        ),
        (
            Message::Extended {
                id: 0,
                payload: Bytes::from_static(b"de"),
            },
            hex!("00000004 14 00 6465").to_vec(),
        ),
        (
            Message::Extended {
                id: 2,
                payload: Bytes::new(),
            },
            hex!("00000002 14 02").to_vec(),
        ),
        (
            Message::Unknown {
                id: 21,
                payload: Bytes::from_static(&hex!("0102")),
            },
            hex!("00000003 15 0102").to_vec(),
        ),
        (
            Message::Unknown {
                id: 0xff,
                payload: Bytes::new(),
            },
            hex!("00000001 ff").to_vec(),
        ),
    ]
}

#[test]
fn every_message_encodes_and_decodes_to_its_fixture() {
    for (msg, wire) in fixtures() {
        let mut out = Vec::new();
        msg.encode(&mut out).unwrap();
        assert_eq!(out, wire, "encode {msg:?}");
        assert_eq!(msg.encoded_len(), wire.len(), "encoded_len {msg:?}");
        assert_eq!(msg.to_bytes().unwrap(), wire);

        let mut buf = Bytes::from(wire.clone());
        assert_eq!(
            Message::decode(&mut buf).unwrap(),
            msg,
            "decode {wire:02x?}"
        );
        assert!(buf.is_empty());

        // The same through a plain slice (copying Buf).
        let mut slice = &wire[..];
        assert_eq!(Message::decode(&mut slice).unwrap(), msg);

        // And without the prefix.
        assert_eq!(
            Message::decode_frame(Bytes::from(wire[4..].to_vec())).unwrap(),
            msg
        );
    }
}

#[test]
fn message_ids_are_the_bep_values() {
    let expected = [
        (Message::Choke, 0),
        (Message::Unchoke, 1),
        (Message::Interested, 2),
        (Message::NotInterested, 3),
        (Message::Have(0), 4),
        (Message::Bitfield(Bytes::new()), 5),
        (Message::Request(REQ), 6),
        (
            Message::Piece {
                index: 0,
                begin: 0,
                data: Bytes::new(),
            },
            7,
        ),
        (Message::Cancel(REQ), 8),
        (Message::Port(0), 9),
        (Message::Suggest(0), 0x0d),
        (Message::HaveAll, 0x0e),
        (Message::HaveNone, 0x0f),
        (Message::Reject(REQ), 0x10),
        (Message::AllowedFast(0), 0x11),
        (
            Message::Extended {
                id: 1,
                payload: Bytes::new(),
            },
            20,
        ),
    ];
    for (msg, want) in expected {
        assert_eq!(msg.id(), Some(want), "{msg:?}");
    }
    assert_eq!(Message::KeepAlive.id(), None);
    assert_eq!(id::EXTENDED, 20);
}

#[test]
fn trailing_byte_in_a_fixed_size_frame_is_incorrect_length() {
    for (msg, wire) in fixtures() {
        let Some(msg_id) = msg.id() else { continue };
        let len = u32::from_be_bytes(wire[..4].try_into().unwrap());
        let mut longer = (len + 1).to_be_bytes().to_vec();
        longer.extend_from_slice(&wire[4..]);
        longer.push(0);
        let result = Message::decode(&mut &longer[..]);
        match msg {
            Message::Bitfield(_)
            | Message::Piece { .. }
            | Message::Extended { .. }
            | Message::Unknown { .. } => assert!(result.is_ok(), "{msg:?}"),
            _ => assert_eq!(
                result,
                Err(DecodeError::IncorrectLength {
                    id: msg_id,
                    expected: len,
                    got: len + 1
                }),
                "{msg:?}"
            ),
        }
    }
}

#[test]
fn message_decode_leaves_following_bytes() {
    let mut buf = Bytes::from_static(&hex!("00000001 01 00000005 04 00000001 ff"));
    assert_eq!(Message::decode(&mut buf), Ok(Message::Unchoke));
    assert_eq!(Message::decode(&mut buf), Ok(Message::Have(1)));
    assert_eq!(buf.as_ref(), &[0xff]);
    assert_eq!(
        Message::decode(&mut buf),
        Err(DecodeError::Incomplete { needed: 3 })
    );
}

#[test]
fn short_and_long_fixed_frames_are_rejected() {
    let cases: [(&[u8], DecodeError); 6] = [
        (
            &hex!("00000002 00 00"),
            DecodeError::IncorrectLength {
                id: 0,
                expected: 1,
                got: 2,
            },
        ),
        (
            &hex!("00000004 04 000000"),
            DecodeError::IncorrectLength {
                id: 4,
                expected: 5,
                got: 4,
            },
        ),
        (
            &hex!("0000000c 06 00000000 00000000 000000"),
            DecodeError::IncorrectLength {
                id: 6,
                expected: 13,
                got: 12,
            },
        ),
        (
            &hex!("00000002 09 00"),
            DecodeError::IncorrectLength {
                id: 9,
                expected: 3,
                got: 2,
            },
        ),
        (
            &hex!("00000008 07 00000000 000000"),
            DecodeError::TooShort {
                id: 7,
                min: 9,
                got: 8,
            },
        ),
        (
            &hex!("00000001 14"),
            DecodeError::TooShort {
                id: 20,
                min: 2,
                got: 1,
            },
        ),
    ];
    common::assert_decode_errors(|mut wire| Message::decode(&mut wire), cases);
    assert_eq!(
        check_frame_len(id::CHOKE, 1 << 20),
        Err(DecodeError::IncorrectLength {
            id: 0,
            expected: 1,
            got: 1 << 20
        })
    );
}

#[test]
fn incomplete_frame_consumes_nothing() {
    const WIRE: [u8; 16] = hex!("0000000d 06 01020304 00004000 000040");
    let wire = WIRE;
    let mut buf = Bytes::from_static(&WIRE);
    assert_eq!(
        Message::decode(&mut buf),
        Err(DecodeError::Incomplete { needed: 1 })
    );
    assert_eq!(buf.len(), wire.len());
    let mut short = &hex!("0000")[..];
    assert_eq!(
        Message::decode(&mut short),
        Err(DecodeError::Incomplete { needed: 2 })
    );
}

#[test]
fn chained_buffers_decode() {
    // The length prefix is split over two chunks.
    let a = Bytes::from_static(&hex!("0000"));
    let b = Bytes::from_static(&hex!("0005 04 00000009"));
    let mut chain = a.chain(b);
    assert_eq!(Message::decode(&mut chain), Ok(Message::Have(9)));
}

#[test]
fn unknown_ids_are_items_not_errors() {
    for msg_id in [10u8, 11, 12, 18, 19, 21, 22, 23, 0x80, 0xff] {
        let wire = [0, 0, 0, 2, msg_id, 0xaa];
        assert_eq!(
            Message::decode(&mut &wire[..]),
            Ok(Message::Unknown {
                id: msg_id,
                payload: Bytes::from_static(&[0xaa])
            })
        );
    }
}

#[test]
fn piece_decode_is_zero_copy() {
    let block = vec![0x5a; 16 * 1024];
    let msg = Message::Piece {
        index: 3,
        begin: 0,
        data: Bytes::from(block),
    };
    let mut buf = BytesMut::new();
    msg.encode(&mut buf).unwrap();
    let frozen = buf.freeze();
    let range = frozen.as_ptr_range();
    let mut src = frozen.clone();
    let Message::Piece { data, .. } = Message::decode(&mut src).unwrap() else {
        panic!("not a piece");
    };
    assert_eq!(data.len(), 16 * 1024);
    assert!(range.contains(&data.as_ptr()));
    assert_eq!(data.as_ptr(), frozen[13..].as_ptr());
}

#[test]
fn encode_into_a_small_fixed_buffer_fails_cleanly() {
    let mut out = [0u8; 8];
    let mut dst = &mut out[..];
    assert_eq!(
        Message::Request(REQ).encode(&mut dst),
        Err(paid_wire::error::EncodeError::BufferTooSmall {
            needed: 17,
            remaining: 8
        })
    );
    assert_eq!(out, [0; 8]);
}

// ---- handshake ----

const HANDSHAKE: [u8; 68] = hex!(
    "13 426974546f7272656e742070726f746f636f6c"
    "0000000000100005"
    "0102030405060708090a0b0c0d0e0f1011121314"
    "2d5057303030312d313233343536373839303132"
);

#[test]
fn handshake_fixture() {
    let hs = Handshake::decode(&mut &HANDSHAKE[..]).unwrap();
    assert!(hs.reserved.extension_protocol());
    assert!(hs.reserved.fast());
    assert!(hs.reserved.dht());
    assert_eq!(
        hs.info_hash,
        hex!("0102030405060708090a0b0c0d0e0f1011121314")
    );
    assert_eq!(&hs.peer_id, b"-PW0001-123456789012");
    assert_eq!(hs.to_bytes(), HANDSHAKE);
    let mut out = Vec::new();
    hs.encode(&mut out);
    assert_eq!(out, HANDSHAKE);
    assert_eq!(&HANDSHAKE[1..20], PROTOCOL);
}

#[test]
fn reserved_bits() {
    let mut r = Reserved::empty();
    assert!(!r.extension_protocol() && !r.fast() && !r.dht());
    r.set_extension_protocol(true);
    assert_eq!(r.0, hex!("0000000000100000"));
    r.set_fast(true);
    assert_eq!(r.0, hex!("0000000000100004"));
    r.set_dht(true);
    assert_eq!(r.0, hex!("0000000000100005"));
    r.set_fast(false);
    assert_eq!(r.0, hex!("0000000000100001"));
    // Unknown bits are kept.
    let r = Reserved(hex!("8000000000000010")).with_extension_protocol(true);
    assert_eq!(r.0, hex!("8000000000100010"));
    assert!(!r.fast());
}

#[test]
fn bad_handshakes_are_typed_errors() {
    let mut wrong_len = HANDSHAKE;
    wrong_len[0] = 18;
    assert_eq!(
        Handshake::decode(&mut &wrong_len[..]),
        Err(DecodeError::HandshakePstrLen { got: 18 })
    );
    let mut wrong_pstr = HANDSHAKE;
    wrong_pstr[5] = b'X';
    assert_eq!(
        Handshake::decode(&mut &wrong_pstr[..]),
        Err(DecodeError::HandshakePstr)
    );
    // A bad prefix is reported before 68 bytes arrive.
    assert_eq!(
        Handshake::decode(&mut &b"\x13BitTorrent"[..]),
        Err(DecodeError::Incomplete { needed: 57 })
    );
    assert_eq!(
        Handshake::decode(&mut &b"\x13GET / HTTP"[..]),
        Err(DecodeError::HandshakePstr)
    );
    assert_eq!(
        Handshake::decode(&mut &HANDSHAKE[..67]),
        Err(DecodeError::Incomplete { needed: 1 })
    );
}

proptest! {
    #[test]
    fn message_round_trip(msg in common::message()) {
        let mut wire = BytesMut::new();
        msg.encode(&mut wire).unwrap();
        prop_assert_eq!(wire.len(), msg.encoded_len());
        let mut src = wire.freeze();
        prop_assert_eq!(Message::decode(&mut src).unwrap(), msg);
        prop_assert!(src.is_empty());
    }

    #[test]
    fn handshake_round_trip(hs in common::handshake()) {
        let mut wire = Vec::new();
        hs.encode(&mut wire);
        prop_assert_eq!(Handshake::decode(&mut &wire[..]).unwrap(), hs);
    }

    /// Whatever decodes re-encodes to exactly the bytes it consumed.
    #[test]
    fn decoded_bytes_reencode_exactly(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut src = &data[..];
        if let Ok(msg) = Message::decode(&mut src) {
            let consumed = data.len() - src.len();
            let reencoded = msg.to_bytes().unwrap();
            prop_assert_eq!(&reencoded[..], &data[..consumed]);
        }
    }
}
