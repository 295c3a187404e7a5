//! The paid-streaming extension: web3torrent's exact bytes, tolerance and rejection.

mod common;

use bytes::Bytes;
use paid_wire::bencode::Value;
use paid_wire::error::{BencodeError, PseError};
use paid_wire::message::Message;
use paid_wire::pse::{ChannelId, EXTENSION_NAME, MAX_PSE_LEN, PseMessage};
use proptest::prelude::*;

const CHANNEL_HEX: &str = "0x6a5b2e8d9c3e4f1a0b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a";

fn channel() -> ChannelId {
    CHANNEL_HEX.parse().unwrap()
}

const JSON: &str = r#"{"recipient":"0x7F0126D6c4270498b6514Cb934a3274898f68777","sender":"0xaaaa84838319627Fa056fC3FC29ab94d479B8502","data":{"signedStates":[]}}"#;

/// web3torrent's bytes for every command (reference §1.2).
fn fixtures() -> Vec<(PseMessage, Vec<u8>)> {
    vec![
        (
            PseMessage::Stop {
                channel_id: Some(channel()),
            },
            format!("d7:command4:stop4:data66:{CHANNEL_HEX}8:msg_typei0ee").into_bytes(),
        ),
        (
            PseMessage::Start,
            b"d7:command5:start4:datade8:msg_typei0ee".to_vec(),
        ),
        (
            PseMessage::PermanentStop {
                channel_id: Some(channel()),
            },
            format!("d7:command14:permanent-stop4:data66:{CHANNEL_HEX}8:msg_typei0ee").into_bytes(),
        ),
        (
            PseMessage::PermanentStop { channel_id: None },
            b"d7:command14:permanent-stop4:datade8:msg_typei0ee".to_vec(),
        ),
        (
            PseMessage::Stop { channel_id: None },
            b"d7:command4:stop4:datade8:msg_typei0ee".to_vec(),
        ),
        (
            PseMessage::Ack,
            b"d7:command3:ack4:datade8:msg_typei0ee".to_vec(),
        ),
        (
            PseMessage::Message {
                message: JSON.to_owned(),
            },
            format!(
                // The reference table shows `<json>ee8:msg_type`, one `e` too many: the data
                // dictionary closes once, the outer one at the very end.
                "d7:command7:message4:datad7:message{}:{JSON}e8:msg_typei0ee",
                JSON.len()
            )
            .into_bytes(),
        ),
        (
            PseMessage::Message {
                message: "µ".to_owned(),
            },
            "d7:command7:message4:datad7:message2:µe8:msg_typei0ee"
                .as_bytes()
                .to_vec(),
        ),
        (
            PseMessage::Unknown {
                command: "pause".to_owned(),
                data: Some(Value::Int(5)),
            },
            b"d7:command5:pause4:datai5e8:msg_typei0ee".to_vec(),
        ),
        (
            PseMessage::Unknown {
                command: "ping".to_owned(),
                data: None,
            },
            b"d7:command4:ping8:msg_typei0ee".to_vec(),
        ),
    ]
}

#[test]
fn every_command_is_byte_identical_to_web3torrent() {
    for (msg, wire) in fixtures() {
        assert_eq!(
            msg.encode(),
            wire,
            "{msg:?}: {}",
            String::from_utf8_lossy(&msg.encode())
        );
        assert_eq!(msg.encoded_len(), wire.len(), "{msg:?}");
        assert_eq!(PseMessage::decode(&wire), Ok(msg));
    }
}

#[test]
fn literal_bytes_from_the_reference() {
    assert_eq!(
        PseMessage::Start.encode(),
        b"d7:command5:start4:datade8:msg_typei0ee"
    );
    assert_eq!(
        PseMessage::Ack.encode(),
        b"d7:command3:ack4:datade8:msg_typei0ee"
    );
    let stop = PseMessage::Stop {
        channel_id: Some(channel()),
    }
    .encode();
    // d 7:command 4:stop 4:data 66:<id> 8:msg_type i0e e
    assert_eq!(stop.len(), 1 + 9 + 6 + 6 + 3 + 66 + 10 + 3 + 1);
    assert!(stop.starts_with(b"d7:command4:stop4:data66:0x6a5b"));
}

#[test]
fn channel_id_text_forms() {
    let id = channel();
    assert_eq!(id.to_string(), CHANNEL_HEX);
    assert_eq!(format!("{id:?}"), format!("ChannelId({CHANNEL_HEX})"));
    let upper = format!("0x{}", CHANNEL_HEX[2..].to_uppercase());
    assert_eq!(upper.parse::<ChannelId>(), Ok(id));
    for bad in [
        &CHANNEL_HEX[2..],
        &CHANNEL_HEX[..65],
        "0X6a5b2e8d9c3e4f1a0b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a",
        "0xzz5b2e8d9c3e4f1a0b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a",
    ] {
        assert!(bad.parse::<ChannelId>().is_err(), "{bad}");
    }
}

#[test]
fn decoding_is_tolerant_where_web3torrent_is() {
    // `data` omitted (web3torrent sends null channel ids that way).
    assert_eq!(
        PseMessage::decode(b"d7:command4:stop8:msg_typei0ee"),
        Ok(PseMessage::Stop { channel_id: None })
    );
    assert_eq!(
        PseMessage::decode(b"d7:command14:permanent-stop8:msg_typei0ee"),
        Ok(PseMessage::PermanentStop { channel_id: None })
    );
    // `msg_type` omitted or different, unknown keys, unsorted keys.
    assert_eq!(
        PseMessage::decode(b"d7:command5:start4:datadee"),
        Ok(PseMessage::Start)
    );
    assert_eq!(
        PseMessage::decode(b"d8:msg_typei7e7:command3:ack5:extra3:xyze"),
        Ok(PseMessage::Ack)
    );
    // The data of start/ack is ignored.
    assert_eq!(
        PseMessage::decode(b"d7:command5:start4:datai1ee"),
        Ok(PseMessage::Start)
    );
    // Upper-case hex.
    let upper = format!(
        "d7:command4:stop4:data66:0x{}e",
        CHANNEL_HEX[2..].to_uppercase()
    );
    assert_eq!(
        PseMessage::decode(upper.as_bytes()),
        Ok(PseMessage::Stop {
            channel_id: Some(channel())
        })
    );
    // Extra keys inside message data.
    assert_eq!(
        PseMessage::decode(b"d7:command7:message4:datad1:xi1e7:message2:{}ee"),
        Ok(PseMessage::Message {
            message: "{}".into()
        })
    );
    // Unknown commands keep their data.
    assert_eq!(
        PseMessage::decode(b"d7:command3:new4:datal1:aee"),
        Ok(PseMessage::Unknown {
            command: "new".into(),
            data: Some(Value::List(vec![Value::from("a")]))
        })
    );
}

#[test]
fn malformed_payloads_are_typed_errors() {
    let cases: Vec<(&[u8], PseError)> = vec![
        (b"le", PseError::NotADict),
        (b"i0e", PseError::NotADict),
        (b"4:stop", PseError::NotADict),
        (b"d4:data0:e", PseError::MissingCommand),
        (b"d7:commandi1ee", PseError::InvalidCommand),
        (b"d7:command1:\xffe", PseError::InvalidCommand),
        (
            b"d7:command4:stop4:data4:0x12e",
            PseError::InvalidChannelId { command: "stop" },
        ),
        (
            b"d7:command4:stop4:datai1ee",
            PseError::InvalidChannelId { command: "stop" },
        ),
        (
            b"d7:command4:stop4:datad1:ai1eee",
            PseError::InvalidChannelId { command: "stop" },
        ),
        (
            b"d7:command14:permanent-stop4:data2:0xe",
            PseError::InvalidChannelId {
                command: "permanent-stop",
            },
        ),
        (b"d7:command7:messagee", PseError::InvalidMessageData),
        (
            b"d7:command7:message4:data2:{}e",
            PseError::InvalidMessageData,
        ),
        (
            b"d7:command7:message4:datadee",
            PseError::InvalidMessageData,
        ),
        (
            b"d7:command7:message4:datad7:messagei1eee",
            PseError::InvalidMessageData,
        ),
        (
            b"d7:command7:message4:datad7:message1:\xffee",
            PseError::InvalidMessageData,
        ),
        (
            b"d7:command3:ack4:datade8:msg_typei0eee",
            PseError::Bencode(BencodeError::TrailingBytes { count: 1 }),
        ),
        (
            b"d7:command3:ack7:command3:acke",
            PseError::Bencode(BencodeError::DuplicateKey { offset: 15 }),
        ),
        (
            b"d7:command3:new4:datallllleeeeee",
            PseError::Bencode(BencodeError::TooDeep { max: 4 }),
        ),
        (b"", PseError::Bencode(BencodeError::UnexpectedEof)),
    ];
    common::assert_decode_errors(PseMessage::decode, cases);
}

/// The commands this crate adds to web3torrent's (`prompt`, `auth-challenge`, `auth-proof`).
fn extension_fixtures() -> Vec<(PseMessage, Vec<u8>)> {
    let mut challenge = b"d7:command14:auth-challenge4:datad5:nonce66:0x".to_vec();
    challenge.extend_from_slice(&b"a5".repeat(32));
    challenge.extend_from_slice(b"e8:msg_typei0ee");
    let mut proof = b"d7:command10:auth-proof4:datad9:signature132:0x".to_vec();
    proof.extend_from_slice(&b"5a".repeat(65));
    proof.extend_from_slice(b"e8:msg_typei0ee");
    vec![
        (
            PseMessage::Prompt {
                bytes: 65536,
                amount: 7,
            },
            b"d7:command6:prompt4:datad6:amount1:75:bytesi65536ee8:msg_typei0ee".to_vec(),
        ),
        (PseMessage::AuthChallenge { nonce: [0xa5; 32] }, challenge),
        (
            PseMessage::AuthProof {
                signature: [0x5a; 65],
            },
            proof,
        ),
    ]
}

#[test]
fn extension_commands_have_exact_bytes_and_round_trip() {
    for (msg, wire) in extension_fixtures() {
        assert_eq!(msg.encode(), wire, "{msg:?}");
        assert_eq!(msg.encoded_len(), wire.len(), "{msg:?}");
        assert_eq!(PseMessage::decode(&wire), Ok(msg));
    }
    let max = PseMessage::Prompt {
        bytes: i64::MAX as u64,
        amount: u128::MAX,
    };
    assert_eq!(PseMessage::decode(&max.encode()), Ok(max));
}

#[test]
fn prompt_is_read_leniently() {
    let prompt = |bytes, amount| Ok(PseMessage::Prompt { bytes, amount });
    assert_eq!(PseMessage::decode(b"d7:command6:prompte"), prompt(0, 0));
    assert_eq!(
        PseMessage::decode(b"d7:command6:prompt4:datad6:amounti9e5:bytesi-1eee"),
        prompt(0, 9)
    );
    assert_eq!(
        PseMessage::decode(b"d7:command6:prompt4:datad6:amount2:x15:bytesi3eee"),
        prompt(3, 0)
    );
}

#[test]
fn malformed_auth_data_is_a_typed_error() {
    let challenge = PseError::InvalidHexField {
        command: "auth-challenge",
    };
    let proof = PseError::InvalidHexField {
        command: "auth-proof",
    };
    let cases: Vec<(&[u8], &PseError)> = vec![
        (b"d7:command14:auth-challengee", &challenge),
        (
            b"d7:command14:auth-challenge4:datad5:nonce4:0x12ee",
            &challenge,
        ),
        (b"d7:command14:auth-challenge4:datai1ee", &challenge),
        (b"d7:command10:auth-proof4:datadee", &proof),
        (b"d7:command10:auth-proof4:datai1ee", &proof),
        (b"d7:command10:auth-proof4:datad9:signaturei1eee", &proof),
    ];
    common::assert_decode_errors(PseMessage::decode, cases);
    // Upper-case hex is accepted, as for channel ids.
    let mut upper = b"d7:command14:auth-challenge4:datad5:nonce66:0x".to_vec();
    upper.extend_from_slice(&[b'A'; 64]);
    upper.extend_from_slice(b"ee");
    assert_eq!(
        PseMessage::decode(&upper),
        Ok(PseMessage::AuthChallenge { nonce: [0xaa; 32] })
    );
}

#[test]
fn trailing_byte_after_every_fixture_is_rejected() {
    for (_, mut wire) in fixtures() {
        wire.push(b'e');
        assert_eq!(
            PseMessage::decode(&wire),
            Err(PseError::Bencode(BencodeError::TrailingBytes { count: 1 }))
        );
    }
}

#[test]
fn oversized_payload_is_rejected() {
    let json = "x".repeat(MAX_PSE_LEN);
    let big = PseMessage::Message { message: json }.encode();
    assert!(matches!(
        PseMessage::decode(&big),
        Err(PseError::Bencode(BencodeError::TooLarge {
            max: MAX_PSE_LEN,
            ..
        }))
    ));
}

#[test]
fn wraps_into_an_extended_message_with_the_peer_id() {
    assert_eq!(EXTENSION_NAME, "paidStreamingExtension");
    assert_eq!(
        PseMessage::Ack.to_message(2),
        Message::Extended {
            id: 2,
            payload: Bytes::from_static(b"d7:command3:ack4:datade8:msg_typei0ee")
        }
    );
    let mut wire = Vec::new();
    PseMessage::Start.to_message(3).encode(&mut wire).unwrap();
    assert_eq!(&wire[..6], &[0, 0, 0, 41, 20, 3]);
    assert_eq!(&wire[6..], b"d7:command5:start4:datade8:msg_typei0ee");
}

proptest! {
    #[test]
    fn pse_round_trip(msg in common::pse_message()) {
        let bytes = msg.encode();
        prop_assert_eq!(bytes.len(), msg.encoded_len());
        prop_assert_eq!(PseMessage::decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn decode_never_panics_and_reencoding_is_a_fixed_point(
        data in proptest::collection::vec(any::<u8>(), 0..128)
    ) {
        if let Ok(msg) = PseMessage::decode(&data) {
            let bytes = msg.encode();
            prop_assert_eq!(PseMessage::decode(&bytes).unwrap(), msg);
        }
    }

    #[test]
    fn mutated_fixtures_never_panic(
        idx in any::<prop::sample::Index>(),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let fixtures = fixtures();
        let (_, mut wire) = fixtures[idx.index(fixtures.len())].clone();
        let p = pos.index(wire.len());
        wire[p] = byte;
        if let Ok(msg) = PseMessage::decode(&wire) {
            prop_assert_eq!(PseMessage::decode(&msg.encode()).unwrap(), msg);
        }
    }
}

/// Found by `pse_decode` fuzzing: an unknown command whose data used almost the whole item
/// budget, without `msg_type`; re-encoding added `msg_type` and the result did not decode.
#[test]
fn input_whose_reencoding_exceeds_the_bounds_is_rejected() {
    let list = |n: usize| format!("l{}e", "0:".repeat(n));
    // command + data + 253 list items = 255 items; re-encoded with msg_type: 256. Fine.
    let ok = format!("d7:command1:x4:data{}e", list(253));
    let msg = PseMessage::decode(ok.as_bytes()).unwrap();
    assert!(PseMessage::decode(&msg.encode()).is_ok());
    // 256 items as sent, 257 once re-encoded.
    let bad = format!("d7:command1:x4:data{}e", list(254));
    assert_eq!(
        PseMessage::decode(bad.as_bytes()),
        Err(PseError::Bencode(BencodeError::TooManyItems { max: 256 }))
    );
    // Length: just under the limit without msg_type, over it with.
    let pad = MAX_PSE_LEN - b"d7:command1:x4:data5:e".len() - 5;
    let long = format!("d7:command1:x4:data{pad}:{}e", "a".repeat(pad));
    assert!(long.len() <= MAX_PSE_LEN);
    assert!(matches!(
        PseMessage::decode(long.as_bytes()),
        Err(PseError::Bencode(BencodeError::TooLarge { .. }))
    ));
    let regression =
        include_bytes!("../../fuzz/regressions/pse_decode/reencoding-exceeds-item-limit");
    assert!(PseMessage::decode(regression).is_err());
}

// Moved from torrent-glue's former `Notice` mirror, now that the commands it added live here
// (its exact-bytes test is `every_command_is_byte_identical_to_web3torrent`'s fixtures).

#[test]
fn glue_notices_round_trip() {
    for n in [
        PseMessage::Stop {
            channel_id: Some(ChannelId([1; 32])),
        },
        PseMessage::Stop { channel_id: None },
        PseMessage::PermanentStop {
            channel_id: Some(ChannelId([2; 32])),
        },
        PseMessage::Start,
        PseMessage::Ack,
        PseMessage::Message {
            message: "{\"recipient\":\"0x1\"}".into(),
        },
        PseMessage::Prompt {
            bytes: 65536,
            amount: u128::MAX,
        },
        PseMessage::AuthChallenge { nonce: [0xa5; 32] },
        PseMessage::AuthProof {
            signature: [0x5a; 65],
        },
        PseMessage::Unknown {
            command: "frobnicate".into(),
            data: None,
        },
    ] {
        assert_eq!(PseMessage::decode(&n.encode()), Ok(n));
    }
}

#[test]
fn glue_notices_tolerant_where_web3torrent_is() {
    // Missing data (channel id was null), upper-case hex.
    assert_eq!(
        PseMessage::decode(b"d7:command4:stop8:msg_typei0ee"),
        Ok(PseMessage::Stop { channel_id: None })
    );
    let mut upper = b"d7:command4:stop4:data66:0x".to_vec();
    upper.extend_from_slice(&[b'A'; 64]);
    upper.extend_from_slice(b"e");
    assert_eq!(
        PseMessage::decode(&upper),
        Ok(PseMessage::Stop {
            channel_id: Some(ChannelId([0xaa; 32]))
        })
    );
}

#[test]
fn glue_notices_reject_garbage_without_panicking() {
    for bad in [
        &b""[..],
        b"d",
        b"de",
        b"le",
        b"i1e",
        b"d7:command4:stop4:data3:0x1e",
        b"d7:command7:message4:datadee",
        b"d7:command5:start4:datade8:msg_typei0eeX",
        b"d7:commandi1ee",
        b"d99999999999999999999:x",
        b"dddddddddddd",
        b"d7:command14:auth-challenge4:datad5:nonce4:0x12ee",
        b"d7:command10:auth-proof4:datadee",
        b"d7:command10:auth-proof4:datai1ee",
    ] {
        assert!(PseMessage::decode(bad).is_err(), "{bad:?}");
    }
}
