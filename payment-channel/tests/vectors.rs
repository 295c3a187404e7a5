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

/// The virtual-funding values of `../shared/reference/nitro-virtual-funding.md` §5.4, computed
/// with the 2.0.1-alpha.6 JS library: a virtual channel `V = [Alice, Irene, Bob]` and the ledger
/// `L = [Alice, Irene]` that guarantees it (go-nitro's test actors; the apps at the addresses an
/// anvil account #0 deployment gives them).
mod virtual_funding {
    use super::*;
    use payment_channel::state::{Guarantee, address_to_destination, allocation_type};
    use payment_channel::voucher::{Voucher, voucher_hash};

    const ALICE_KEY: &str = "2d999770f7b5d49b694080f987b82bbc9fc9ac2b4dcc10b0f8aba7d700f69c6d";
    const VIRTUAL_PAYMENT_APP: &str = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0";
    const CONSENSUS_APP: &str = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512";

    fn addr(s: &str) -> Address {
        Address::from_str(s).expect("address")
    }

    fn h(s: &str) -> B256 {
        B256::from_str(s).expect("32-byte hex")
    }

    fn alice() -> Address {
        addr("0xAAA6628Ec44A8a742987EF3A114dDFE2D4F7aDCE")
    }
    fn bob() -> Address {
        addr("0xBBB676f9cFF8D242e9eaC39D063848807d3D1D94")
    }
    fn irene() -> Address {
        addr("0x111A00868581f73AB42FEEF67D235Ca09ca1E8db")
    }

    fn v_fixed() -> FixedPart {
        FixedPart {
            participants: vec![alice(), irene(), bob()],
            channel_nonce: 1,
            app_definition: addr(VIRTUAL_PAYMENT_APP),
            challenge_duration: 60,
        }
    }

    fn exit(allocations: Vec<Allocation>) -> Vec<SingleAssetExit> {
        vec![SingleAssetExit {
            asset: Address::ZERO,
            asset_metadata: AssetMetadata::default(),
            allocations,
        }]
    }

    fn v_prefund() -> VariablePart {
        VariablePart {
            outcome: exit(vec![
                Allocation::simple(alice(), U256::from(100)),
                Allocation::simple(bob(), U256::ZERO),
            ]),
            app_data: Bytes::new(),
            turn_num: 0,
            is_final: false,
        }
    }

    fn ledger_state(guarantee_type: u8) -> (FixedPart, VariablePart) {
        let fixed = FixedPart {
            participants: vec![alice(), irene()],
            channel_nonce: 2,
            app_definition: addr(CONSENSUS_APP),
            challenge_duration: 60,
        };
        let mut g = Allocation::guarantee(
            v_fixed().channel_id(),
            U256::from(100),
            Guarantee {
                left: address_to_destination(alice()),
                right: address_to_destination(irene()),
            },
        );
        g.allocation_type = guarantee_type;
        let vp = VariablePart {
            outcome: exit(vec![
                Allocation::simple(alice(), U256::from(900)),
                Allocation::simple(irene(), U256::from(1000)),
                g,
            ]),
            app_data: Bytes::new(),
            turn_num: 2,
            is_final: false,
        };
        (fixed, vp)
    }

    #[test]
    fn virtual_channel_id_and_prefund_hash() {
        let v = v_fixed();
        assert_eq!(
            v.channel_id(),
            h("0xe980025b7ba1873ba006bd0e77006daafacc959288d7f30fcb7e02f4f51d49ee")
        );
        assert_eq!(
            v_prefund().hash(v.channel_id()),
            h("0x1728d34594068d7267c399083c802f57ea1e7c3758f0396b17397e98a83a2320")
        );
        let alice_key = LocalSigner::from_hex(ALICE_KEY).expect("key");
        assert_eq!(alice_key.address(), alice());
        let sig = alice_key
            .sign_eth_message(&v_prefund().hash(v.channel_id()))
            .expect("sign");
        assert_eq!(
            hex::encode(sig.to_rsv()),
            "7d91cdf0762ec185b4c5c8c15ed17a1204e97c2fe2f4ae1ddeb1ad8d9b77772e5dc8ef61fa719fcef848464c25909cffe70f96f203f7ef7d6843ef50014b62c31c"
        );
    }

    #[test]
    fn ledger_with_a_type_2_guarantee() {
        let (fixed, vp) = ledger_state(allocation_type::GUARANTEE);
        let id = fixed.channel_id();
        assert_eq!(
            id,
            h("0x21c770945a1b1f2030922afa4d4647d79c38a26a5d3722a56a7158e4f03968a0")
        );
        let g = &vp.outcome[0].allocations[2];
        assert_eq!(
            hex::encode_prefixed(&g.metadata),
            "0x000000000000000000000000aaa6628ec44a8a742987ef3a114ddfe2d4f7adce000000000000000000000000111a00868581f73ab42feef67d235ca09ca1e8db"
        );
        assert_eq!(
            g.as_guarantee(),
            Some(Guarantee {
                left: address_to_destination(alice()),
                right: address_to_destination(irene()),
            })
        );
        assert_eq!(
            hash_outcome(&vp.outcome),
            h("0xac55a2925bf46923dc621e6b4d1b2b9a230ce26e8abbb6ea82bbdcf415df9037")
        );
        assert_eq!(
            vp.hash(id),
            h("0xb4b896c77a370bc8c3f838fb0497a0f401367802c068578d24288881a10ed8cb")
        );
    }

    #[test]
    fn go_nitro_type_1_guarantee_hashes_differently_and_is_not_a_guarantee() {
        let (fixed, vp) = ledger_state(allocation_type::WITHDRAW_HELPER);
        assert_eq!(
            hash_outcome(&vp.outcome),
            h("0x6cec5fb576bd2de59fbb8c84345fbe6397bb7f68aa642bf6938d054963716fbe")
        );
        assert_eq!(
            vp.hash(fixed.channel_id()),
            h("0x64ca4352ed23861da9a63b9e0322437e20fb260028051c09fbef1851e1c77f1a")
        );
        assert_eq!(vp.outcome[0].allocations[2].as_guarantee(), None);
    }

    #[test]
    fn guarantee_metadata_round_trips_and_rejects_bad_lengths() {
        let g = Guarantee {
            left: B256::with_last_byte(0x0a),
            right: B256::with_last_byte(0x0b),
        };
        // go-nitro `channel/state/outcome/guarantee_test.go`: two 32-byte words.
        assert_eq!(
            hex::encode(g.encode()),
            format!("{}0a{}0b", "0".repeat(62), "0".repeat(62))
        );
        assert_eq!(Guarantee::decode(&g.encode()), Some(g));
        assert_eq!(Guarantee::decode(&g.encode()[..63]), None);
        assert_eq!(Guarantee::decode(&[0u8; 65]), None);
    }

    #[test]
    fn voucher_on_the_virtual_channel() {
        let id = v_fixed().channel_id();
        assert_eq!(
            voucher_hash(id, U256::from(10)),
            h("0x0b1945473f580a3c703d99393e74d23117a25fe6c497161f957e6196782286ff")
        );
        let alice_key = LocalSigner::from_hex(ALICE_KEY).expect("key");
        let v = Voucher::sign(id, U256::from(10), &alice_key).expect("sign");
        assert_eq!(
            hex::encode(v.signature.to_rsv()),
            "ae025ad0201ad83cc65af6d8f0b04bcda0043120cb45f31904a92e547930675275845d528288f91390cb57b7f1741634d9aa2b0fce7bd3efb15528d1d9f45f6a1b"
        );
    }
}
