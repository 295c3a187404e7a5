//! The runtime code hashes that a client checks deployed contracts against are those of the
//! pinned artifacts: [`NITRO_ADJUDICATOR_RUNTIME_HASH`] is recomputed from the fetched
//! `NitroAdjudicator.json`, and (feature `ethereum`) a deployment on anvil reports both hashes
//! through [`Chain::code_hash`].

use alloy_primitives::hex;
use payment_channel::B256;
use payment_channel::chain::NITRO_ADJUDICATOR_RUNTIME_HASH;
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
    assert_eq!(
        chain.code_hash(d.nitro_adjudicator).await.unwrap(),
        NITRO_ADJUDICATOR_RUNTIME_HASH
    );
    assert_eq!(
        chain.code_hash(d.payment_app).await.unwrap(),
        PAYMENT_APP_RUNTIME_HASH
    );
    assert_ne!(
        chain.code_hash(d.virtual_payment_app).await.unwrap(),
        NITRO_ADJUDICATOR_RUNTIME_HASH
    );
}
