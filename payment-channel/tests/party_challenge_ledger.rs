//! `Party::challenge_ledger`: a ledger without guarantees is challenged at once; one holding
//! the guarantee of a virtual channel is not (§0.4): the virtual channel goes on chain first.

use std::collections::VecDeque;
use std::sync::Arc;

use payment_channel::chain::{ChainAction, ChainEvent};
use payment_channel::sign::LocalSigner;
use payment_channel::virtual_channel::{Envelope, HubLimits, Party, PartyConfig, VirtualParams};
use payment_channel::{Address, B256, U256};

const PAYMENT_APP: Address = Address::repeat_byte(0xa9);

fn party(hub: bool) -> Party {
    let limits = HubLimits {
        max_amount: U256::from(500),
        max_locked_per_ledger: U256::from(1_000),
        min_fee: U256::ZERO,
    };
    Party::new(
        Arc::new(LocalSigner::random()),
        PartyConfig::new(Address::repeat_byte(0xc0), PAYMENT_APP).with_hub(hub.then_some(limits)),
    )
}

fn run(parties: &mut [Party]) {
    let mut net: VecDeque<Envelope> = VecDeque::new();
    loop {
        for p in parties.iter_mut() {
            if p.poll_persist().is_some() {
                p.handle_persisted();
            }
            while let Some(e) = p.poll_envelope() {
                net.push_back(e);
            }
        }
        let Some(e) = net.pop_front() else { return };
        let to = parties.iter_mut().find(|p| p.address() == e.to).unwrap();
        to.handle_envelope(&e).unwrap();
    }
}

fn fund(parties: &mut [Party], id: B256, amount: u64) {
    let ev = ChainEvent::Deposited {
        channel_id: id,
        asset: Address::ZERO,
        holdings: U256::from(amount),
    };
    for p in parties.iter_mut() {
        if p.ledger(&id).is_some() {
            p.handle_chain_event(1_000, &ev).unwrap();
        }
    }
    run(parties);
}

fn challenged(p: &Party, id: B256) -> bool {
    p.chain_duties(1_000)
        .unwrap()
        .iter()
        .any(|d| matches!(d, ChainAction::Challenge { fixed, .. } if fixed.channel_id() == id))
}

#[test]
fn challenge_ledger_goes_through_the_virtual_channels_it_guarantees() {
    // [payer, hub, payee]
    let mut ps = vec![party(false), party(true), party(false)];
    let (hub, payee) = (ps[1].address(), ps[2].address());
    let l1 = ps[0]
        .open_ledger(hub, 1, 100, Address::ZERO, U256::from(1_000))
        .unwrap();
    let l2 = ps[1]
        .open_ledger(payee, 2, 100, Address::ZERO, U256::from(300))
        .unwrap();
    run(&mut ps);
    fund(&mut ps, l1, 1_000);
    fund(&mut ps, l2, 300);

    // L(hub, payee) holds nothing: challenged at once.
    ps[1].challenge_ledger(l2).unwrap();
    assert!(challenged(&ps[1], l2));

    // L(payer, hub) holds V's guarantee: V is challenged, not the ledger (yet).
    let v = ps[0]
        .propose_virtual(&VirtualParams {
            hub,
            payee,
            channel_nonce: 7,
            app_definition: PAYMENT_APP,
            challenge_duration: 100,
            asset: Address::ZERO,
            amount: U256::from(100),
            fee: U256::ZERO,
        })
        .unwrap();
    run(&mut ps);
    assert!(ps[0].channel(&v).unwrap().is_running());
    assert!(!challenged(&ps[0], l1) && !challenged(&ps[0], v));
    ps[0].challenge_ledger(l1).unwrap();
    assert!(challenged(&ps[0], v), "the virtual channel goes first");
    assert!(!challenged(&ps[0], l1), "the ledger waits for it (§0.4)");
    // Unknown ledgers are a usage error.
    assert!(ps[0].challenge_ledger(B256::repeat_byte(1)).is_err());
}
