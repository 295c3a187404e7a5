//! The Nitro v2 test vectors in `../shared/vectors/` (generated with the official
//! `@statechannels/nitro-protocol@2.0.1-alpha.6` library, plus go-nitro's maintainer-written
//! known answer), reproduced byte for byte.

use std::path::PathBuf;
use std::str::FromStr;

use alloy_primitives::{Address, B256, Bytes, U256, hex};
use payment_channel::sign::{
    LocalSigner, Signature, Signer, recover_eth_message, verify_eth_message,
};
use payment_channel::state::{
    Allocation, AssetMetadata, FixedPart, SingleAssetExit, VariablePart, challenge_message_hash,
    encode_outcome, hash_outcome,
};
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors")
}

fn load(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read test vectors {} ({e}); the repository expects ../shared beside its root",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("vector file is JSON")
}

fn b256(v: &Value) -> B256 {
    B256::from_str(v.as_str().expect("hex string")).expect("32-byte hex")
}

fn sig(v: &Value) -> Signature {
    let rsv = hex::decode(v["rsv"].as_str().or(v.as_str()).expect("rsv")).expect("hex");
    Signature::from_rsv(&rsv).expect("valid signature")
}

/// Parses "allocations [alice:7, bob:3]" from the vector's outcome description.
fn amounts(desc: &str) -> (U256, U256) {
    let start = desc.find("allocations [").expect("allocations") + "allocations [".len();
    let end = start + desc[start..].find(']').expect("]");
    let mut it = desc[start..end].split(',').map(|part| {
        let n = part.split(':').nth(1).expect("amount").trim();
        U256::from_str(n).expect("decimal amount")
    });
    (it.next().expect("alice"), it.next().expect("bob"))
}

struct Case {
    fixed: FixedPart,
    vp: VariablePart,
    expected: Value,
}

fn cases(file: &str) -> (Value, Vec<Case>) {
    let doc = load(file);
    let mut out = Vec::new();
    for c in doc["cases"].as_array().expect("cases") {
        let input = &c["input"];
        let participants: Vec<Address> = input["participants"]
            .as_array()
            .expect("participants")
            .iter()
            .map(|a| Address::from_str(a.as_str().expect("address")).expect("address"))
            .collect();
        let destinations: Vec<B256> = match input.get("destinations") {
            Some(d) => d
                .as_array()
                .expect("destinations")
                .iter()
                .map(b256)
                .collect(),
            None => participants.iter().map(|a| a.into_word()).collect(),
        };
        let (a, b) = amounts(input["outcome"].as_str().expect("outcome"));
        let outcome = vec![SingleAssetExit {
            asset: Address::ZERO,
            asset_metadata: AssetMetadata::default(),
            allocations: vec![
                Allocation {
                    destination: destinations[0],
                    amount: a,
                    allocation_type: 0,
                    metadata: Bytes::new(),
                },
                Allocation {
                    destination: destinations[1],
                    amount: b,
                    allocation_type: 0,
                    metadata: Bytes::new(),
                },
            ],
        }];
        let fixed = FixedPart {
            participants,
            channel_nonce: input["channelNonce"].as_u64().expect("nonce"),
            app_definition: Address::from_str(input["appDefinition"].as_str().expect("app"))
                .expect("address"),
            challenge_duration: input["challengeDuration"].as_u64().expect("duration"),
        };
        let vp = VariablePart {
            outcome,
            app_data: Bytes::from(
                hex::decode(input["appData"].as_str().expect("appData")).expect("hex"),
            ),
            turn_num: input["turnNum"].as_u64().expect("turnNum"),
            is_final: input["isFinal"].as_bool().expect("isFinal"),
        };
        out.push(Case {
            fixed,
            vp,
            expected: c.clone(),
        });
    }
    (doc, out)
}

fn check_file(file: &str) -> usize {
    let (doc, cases) = cases(file);
    let alice = LocalSigner::from_hex(doc["keys"]["alice"].as_str().expect("key")).expect("key");
    let bob = LocalSigner::from_hex(doc["keys"]["bob"].as_str().expect("key")).expect("key");
    assert_eq!(
        alice.address(),
        Address::from_str(doc["addresses"]["alice"].as_str().expect("addr")).expect("addr")
    );
    assert_eq!(
        bob.address(),
        Address::from_str(doc["addresses"]["bob"].as_str().expect("addr")).expect("addr")
    );
    for case in &cases {
        let e = &case.expected;
        let channel_id = case.fixed.channel_id();
        assert_eq!(channel_id, b256(&e["channelId"]), "{file}: channel id");
        assert_eq!(
            hex::encode_prefixed(encode_outcome(&case.vp.outcome)),
            e["encodedOutcome"].as_str().expect("encodedOutcome"),
            "{file}: encoded outcome"
        );
        assert_eq!(
            hash_outcome(&case.vp.outcome),
            b256(&e["outcomeHash"]),
            "{file}: outcome hash"
        );
        let state_hash = case.vp.hash(channel_id);
        assert_eq!(state_hash, b256(&e["stateHash"]), "{file}: state hash");

        // Signing is deterministic (RFC 6979), so our signatures equal the library's.
        let sa = alice.sign_eth_message(&state_hash).expect("sign");
        assert_eq!(sa, sig(&e["sigAlice"]), "{file}: alice's state signature");
        if let Some(sb) = e.get("sigBob") {
            assert_eq!(bob.sign_eth_message(&state_hash).expect("sign"), sig(sb));
        }
        assert_eq!(
            recover_eth_message(&state_hash, &sa).expect("recover"),
            alice.address()
        );
        assert!(verify_eth_message(&state_hash, &sa, &alice.public_key()));
        assert!(!verify_eth_message(&state_hash, &sa, &bob.public_key()));

        if let Some(ch) = e.get("challengeMessageHash") {
            let msg = challenge_message_hash(state_hash);
            assert_eq!(msg, b256(ch), "{file}: challenge message hash");
            let cs = alice.sign_eth_message(&msg).expect("sign");
            assert_eq!(
                cs,
                sig(&e["challengerSigAlice"]),
                "{file}: challenger signature"
            );
        }
        if let Some(m) = e.get("maintainerExpectedSigAlice") {
            assert_eq!(sa, sig(m), "{file}: maintainer known answer");
        }
    }
    cases.len()
}

#[test]
fn nitro_v2_official_library_cases() {
    assert_eq!(check_file("nitro-v2-2.0.1-alpha.6.json"), 3);
}

#[test]
fn nitro_v2_go_nitro_maintainer_known_answer() {
    assert_eq!(check_file("nitro-v2-go-nitro-kat.json"), 1);
}

#[test]
fn go_nitro_known_answer_literal() {
    // go-nitro channel/state/state_test.go, independent of the JSON file.
    let (_, cases) = cases("nitro-v2-go-nitro-kat.json");
    let c = &cases[0];
    assert_eq!(
        c.fixed.channel_id(),
        B256::from(hex_literal::hex!(
            "3f9dfeabcc41d1618dd0711102018ab6c1a1d7c25111a425401c2e524eb073a2"
        ))
    );
    assert_eq!(
        c.vp.hash(c.fixed.channel_id()),
        B256::from(hex_literal::hex!(
            "8e20f2e5f2cd3b3d4805eb3b98d2cf2945631042f4cb69fc629425dd28efe184"
        ))
    );
}
