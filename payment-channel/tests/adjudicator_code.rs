//! The runtime code hashes that a client checks deployed contracts against are those of the
//! pinned artifacts: [`NITRO_ADJUDICATOR_RUNTIME_HASH`] is recomputed from the fetched
//! `NitroAdjudicator.json`, and (feature `ethereum`) a deployment on anvil reports both hashes
//! through [`Chain::code_hash`].

use alloy_primitives::hex;
use payment_channel::B256;
use payment_channel::chain::{CONSENSUS_APP_RUNTIME_HASH, NITRO_ADJUDICATOR_RUNTIME_HASH};
use payment_channel::test_utils::anvil::artifacts_dir;

/// `keccak256` of an artifact's `deployedBytecode`.
fn deployed_code_hash(artifact: &str) -> Option<B256> {
    let path = artifacts_dir()?.join(artifact);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("artifact")).expect("artifact JSON");
    let code = json["deployedBytecode"]
        .as_str()
        .expect("deployedBytecode is a string");
    let code = hex::decode(code.trim_start_matches("0x")).expect("deployedBytecode is hex");
    Some(alloy_primitives::keccak256(code))
}

#[test]
fn the_adjudicator_hash_is_the_artifacts() {
    let Some(hash) = deployed_code_hash("NitroAdjudicator.json") else {
        return;
    };
    assert_eq!(hash, NITRO_ADJUDICATOR_RUNTIME_HASH);
}

#[test]
fn the_consensus_app_hash_is_the_artifacts() {
    let Some(hash) = deployed_code_hash("ConsensusApp.json") else {
        return;
    };
    assert_eq!(hash, CONSENSUS_APP_RUNTIME_HASH);
}

/// The canonical Solidity type of an ABI JSON parameter (tuples expanded).
fn canonical(param: &serde_json::Value) -> String {
    let ty = param["type"].as_str().expect("type");
    match ty.strip_prefix("tuple") {
        Some(suffix) => {
            let parts: Vec<String> = param["components"]
                .as_array()
                .expect("components")
                .iter()
                .map(canonical)
                .collect();
            format!("({}){suffix}", parts.join(","))
        }
        None => ty.to_owned(),
    }
}

/// Every call and event of `abi::NitroAdjudicator` this crate sends or decodes has the signature
/// of the published adjudicator's ABI (a wrong field order in `ReclaimArgs` would change it).
#[test]
fn the_adjudicator_interface_matches_the_artifacts_abi() {
    use alloy_sol_types::{SolCall, SolEvent};
    use payment_channel::abi::NitroAdjudicator as N;
    let Some(dir) = artifacts_dir() else { return };
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("NitroAdjudicator.json")).expect("artifact"),
    )
    .expect("artifact JSON");
    let abi: Vec<String> = json["abi"]
        .as_array()
        .expect("abi")
        .iter()
        .filter_map(|item| {
            let name = item["name"].as_str()?;
            let inputs: Vec<String> = item["inputs"].as_array()?.iter().map(canonical).collect();
            Some(format!("{name}({})", inputs.join(",")))
        })
        .collect();
    for signature in [
        N::depositCall::SIGNATURE,
        N::holdingsCall::SIGNATURE,
        N::challengeCall::SIGNATURE,
        N::checkpointCall::SIGNATURE,
        N::concludeCall::SIGNATURE,
        N::transferAllAssetsCall::SIGNATURE,
        N::concludeAndTransferAllAssetsCall::SIGNATURE,
        N::reclaimCall::SIGNATURE,
        N::transferCall::SIGNATURE,
        N::unpackStatusCall::SIGNATURE,
        N::ChallengeRegistered::SIGNATURE,
        N::ChallengeCleared::SIGNATURE,
        N::Checkpointed::SIGNATURE,
        N::Concluded::SIGNATURE,
        N::Deposited::SIGNATURE,
        N::AllocationUpdated::SIGNATURE,
        N::Reclaimed::SIGNATURE,
    ] {
        assert!(
            abi.iter().any(|s| s == signature),
            "{signature} is not in the ABI"
        );
    }
    // The selector the reference gives for `reclaim`.
    assert_eq!(N::reclaimCall::SELECTOR, [0xd3, 0xc4, 0xe7, 0x38]);
}

#[test]
fn the_payment_app_hash_is_the_artifacts() {
    let Some(hash) = deployed_code_hash("PaymentApp.json") else {
        return;
    };
    assert_eq!(hash, payment_channel::app::PAYMENT_APP_RUNTIME_HASH);
}

/// What anvil returns for the deployed contracts hashes to the constants (no immutables, no
/// linked libraries: the code on chain is the artifact's `deployedBytecode`).
#[cfg(feature = "ethereum")]
#[tokio::test]
async fn deployed_contracts_have_the_constant_hashes() {
    use payment_channel::app::PAYMENT_APP_RUNTIME_HASH;
    use payment_channel::chain::ethereum::{NitroArtifacts, deploy};
    use payment_channel::chain::{Chain, EthereumChain};
    use payment_channel::test_utils::anvil::{Anvil, DEV_KEYS};
    let (Some(anvil), Some(dir)) = (Anvil::start(), artifacts_dir()) else {
        return;
    };
    let key: B256 = DEV_KEYS[0].parse().unwrap();
    let artifacts = NitroArtifacts::from_dir(&dir).unwrap();
    let d = deploy(&anvil.url, &key, &artifacts).await.unwrap();
    let chain = EthereumChain::connect(&anvil.url, &key, d.nitro_adjudicator)
        .await
        .unwrap();
    // (contract, address, a runtime hash, whether its code hash is that one)
    for (name, address, hash, same) in [
        (
            "NitroAdjudicator",
            d.nitro_adjudicator,
            NITRO_ADJUDICATOR_RUNTIME_HASH,
            true,
        ),
        ("PaymentApp", d.payment_app, PAYMENT_APP_RUNTIME_HASH, true),
        (
            "VirtualPaymentApp",
            d.virtual_payment_app,
            NITRO_ADJUDICATOR_RUNTIME_HASH,
            false,
        ),
        (
            "ConsensusApp",
            d.consensus_app,
            CONSENSUS_APP_RUNTIME_HASH,
            true,
        ),
    ] {
        let code = chain.code_hash(address).await.unwrap();
        assert_eq!(
            code == hash,
            same,
            "{name}: code hash {code}, against {hash}"
        );
    }
    // Where the simulator puts it, so that ledger channel ids agree across backends.
    assert_eq!(
        d.consensus_app,
        payment_channel::chain::sim::DEFAULT_CONSENSUS_APP
    );
}
