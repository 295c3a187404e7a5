//! What the chain shows about a [`ChainAction`](super::ChainAction) before and after a driver
//! sends it: whether it landed already or became moot. Shared by the async drivers
//! ([`Client`](crate::client::Client), [`PartyNode`](crate::party_node::PartyNode)), which retry
//! actions from persisted state and so may see one more than once.

use alloy_primitives::{Address, B256, U256};

use super::{Chain, ChainAction, ChainError, ChannelMode};
use crate::state::Outcome;

/// The asset of a one-asset outcome (`Address::ZERO`, the native coin, for an empty one).
pub(crate) fn first_asset(outcome: &Outcome) -> Address {
    outcome.first().map_or(Address::ZERO, |e| e.asset)
}

/// Whether the adjudicator shows `id` finalized.
pub(crate) async fn is_finalized(chain: &dyn Chain, id: B256) -> Result<bool, ChainError> {
    let now = chain.now().await?;
    Ok(chain.status(id).await?.mode(now) == ChannelMode::Finalized)
}

/// Whether a challenge (`challenge`) or a checkpoint (`!challenge`) at `turn` cannot land or is
/// not needed: the channel finalized, or the chain records that turn already (an open channel
/// accepts a challenge at the recorded turn, a checkpoint only above it).
pub(crate) async fn turn_is_moot(
    chain: &dyn Chain,
    id: B256,
    turn: u64,
    challenge: bool,
) -> Result<bool, ChainError> {
    let now = chain.now().await?;
    let status = chain.status(id).await?;
    Ok(match status.mode(now) {
        ChannelMode::Finalized => true,
        ChannelMode::Challenge => status.turn_num_record >= turn,
        ChannelMode::Open if challenge => status.turn_num_record > turn,
        ChannelMode::Open => status.turn_num_record >= turn,
    })
}

/// What `action`, a deposit of `amount` on top of `expected_held`, still misses, judged by the
/// holdings the chain has now (a deposit that landed in a block not applied yet is not sent
/// again, a partial one is completed): `None` when nothing is missing (or `action` is no
/// deposit), else `(held, missing)`.
pub(crate) async fn deposit_shortfall(
    chain: &dyn Chain,
    action: &ChainAction,
) -> Result<Option<(U256, U256)>, ChainError> {
    let ChainAction::Deposit {
        asset,
        channel_id,
        expected_held,
        amount,
    } = *action
    else {
        return Ok(None);
    };
    let target = expected_held.saturating_add(amount);
    let held = chain.holdings(asset, channel_id).await?;
    Ok((held < target).then(|| (held, target - held)))
}

/// Sends `action`, a `transferAllAssets`, unless the channel holds nothing of the outcome's
/// asset (paid out already); a failure is an error only if the holdings are still there
/// afterwards (someone else may have paid out in between). Any other action is left alone.
pub(crate) async fn transfer_all_assets_once(
    chain: &dyn Chain,
    action: &ChainAction,
) -> Result<(), ChainError> {
    let ChainAction::TransferAllAssets {
        channel_id,
        outcome,
        ..
    } = action
    else {
        return Ok(());
    };
    let asset = first_asset(outcome);
    if chain.holdings(asset, *channel_id).await?.is_zero() {
        return Ok(());
    }
    tracing::info!(channel = %channel_id, "transferAllAssets");
    if let Err(e) = action.send(chain).await
        && !chain.holdings(asset, *channel_id).await?.is_zero()
    {
        return Err(e);
    }
    Ok(())
}
