//! The sans-IO ledger channel: funding, the consensus Add/Remove protocol, closing, and the
//! refusals of hostile leaders (each leaves the follower unchanged).

use payment_channel::chain::{ChainAction, ChainEvent};
use payment_channel::error::Reaction;
use payment_channel::ledger::*;
use payment_channel::sign::{LocalSigner, Signer};
use payment_channel::state::{
    Allocation, FixedPart, SignedVariablePart, VariablePart, address_to_destination,
    allocation_type,
};
use payment_channel::{Address, B256, Bytes, U256};

const CONSENSUS_APP: Address = Address::repeat_byte(0xc0);

fn u(n: u64) -> U256 {
    U256::from(n)
}

struct Pair {
    leader_key: LocalSigner,
    follower_key: LocalSigner,
    leader: Ledger,
    follower: Ledger,
}

fn deliver(
    from_key: &LocalSigner,
    from: &mut Ledger,
    to_key: &LocalSigner,
    to: &mut Ledger,
) -> usize {
    let mut n = 0;
    while let Some(o) = from.poll_output() {
        if let LedgerOutput::Send(m) = o {
            if let Err(e) = to.handle_message(to_key, from_key.address(), &m) {
                // Replays and reordering are harmless; anything else is a bug here.
                assert_eq!(e.reaction(), Reaction::Ignore, "{e}");
            }
            n += 1;
        }
    }
    n
}

impl Pair {
    fn pump(&mut self) {
        loop {
            let a = deliver(
                &self.leader_key,
                &mut self.leader,
                &self.follower_key,
                &mut self.follower,
            );
            let b = deliver(
                &self.follower_key,
                &mut self.follower,
                &self.leader_key,
                &mut self.leader,
            );
            if a + b == 0 {
                break;
            }
        }
    }

    fn drain(&mut self) {
        while self.leader.poll_output().is_some() {}
        while self.follower.poll_output().is_some() {}
    }

    fn open(deposit: u64) -> Self {
        let leader_key = LocalSigner::random();
        let follower_key = LocalSigner::random();
        let fixed = FixedPart {
            participants: vec![leader_key.address(), follower_key.address()],
            channel_nonce: 7,
            app_definition: CONSENSUS_APP,
            challenge_duration: 100,
        };
        let mut leader = Ledger::open(&leader_key, fixed, Address::ZERO, u(deposit)).unwrap();
        let Some(LedgerOutput::Send(open)) = leader.poll_output() else {
            panic!("open message")
        };
        let follower =
            Ledger::accept_open(&follower_key, CONSENSUS_APP, leader_key.address(), &open).unwrap();
        let mut p = Self {
            leader_key,
            follower_key,
            leader,
            follower,
        };
        p.pump();
        assert_eq!(p.leader.phase(), LedgerPhase::Funding);
        let duties = p.leader.chain_duties(&p.leader_key, 0).unwrap();
        assert!(
            matches!(duties.as_slice(), [ChainAction::Deposit { amount, .. }] if *amount == u(deposit))
        );
        let ev = ChainEvent::Deposited {
            channel_id: p.leader.id(),
            asset: Address::ZERO,
            holdings: u(deposit),
        };
        p.leader.handle_chain_event(&p.leader_key, 0, &ev).unwrap();
        p.follower
            .handle_chain_event(&p.follower_key, 0, &ev)
            .unwrap();
        p.pump();
        assert_eq!(p.leader.phase(), LedgerPhase::Open);
        assert_eq!(p.follower.phase(), LedgerPhase::Open);
        p.drain();
        p
    }

    fn dest(&self, leader: bool) -> B256 {
        address_to_destination(if leader {
            self.leader_key.address()
        } else {
            self.follower_key.address()
        })
    }

    fn add(&self, target: u8, amount: u64, fee: u64) -> Proposal {
        Proposal::Add {
            target: B256::repeat_byte(target),
            amount: u(amount),
            left: self.dest(true),
            right: self.dest(false),
            left_deposit: u(amount),
            fee: u(fee),
        }
    }

    /// The leader proposes `proposal` and the messages are exchanged.
    fn propose(&mut self, proposal: Proposal) {
        self.leader.propose(&self.leader_key, proposal).unwrap();
        self.pump();
    }

    /// An Add of `amount` for `target` with `fee`, proposed and countersigned.
    fn countersigned_add(&mut self, target: u8, amount: u64, fee: u64) -> Proposal {
        let add = self.add(target, amount, fee);
        self.propose(add);
        self.follower
            .countersign_next(&self.follower_key, &add)
            .unwrap();
        self.pump();
        add
    }

    /// The leader's proposals message, taken from its outputs.
    fn take_proposals(&mut self) -> LedgerMessage {
        let mut last = None;
        while let Some(o) = self.leader.poll_output() {
            if let LedgerOutput::Send(m) = o {
                last = Some(m);
            }
        }
        last.expect("a proposals message")
    }
}

#[test]
fn add_remove_close_roundtrip() {
    let mut p = Pair::open(100);
    let add = p.add(0xa1, 30, 2);
    p.propose(add);
    // Not countersigned until the follower's objective expects it.
    assert_eq!(p.follower.countersigned().unwrap().turn_num, 1);
    assert!(
        !p.follower
            .countersign_next(&p.follower_key, &p.add(0xa2, 30, 2))
            .unwrap()
    );
    assert!(p.follower.countersign_next(&p.follower_key, &add).unwrap());
    p.pump();
    let v = p.leader.countersigned().unwrap();
    assert_eq!(v.turn_num, 2);
    assert_eq!(v.balances, [u(68), u(2)]);
    assert_eq!(v.total(), Some(u(100)));
    let remove = Proposal::Remove {
        target: B256::repeat_byte(0xa1),
        left_amount: u(10),
    };
    p.propose(remove);
    assert!(
        p.follower
            .countersign_next(&p.follower_key, &remove)
            .unwrap()
    );
    p.pump();
    assert_eq!(p.leader.countersigned().unwrap().balances, [u(78), u(22)]);
    assert_eq!(p.follower.countersigned(), p.leader.countersigned());
    p.leader.close(&p.leader_key).unwrap();
    p.pump();
    assert_eq!(p.leader.phase(), LedgerPhase::Closed);
    assert_eq!(p.follower.phase(), LedgerPhase::Closed);
    let duties = p.leader.chain_duties(&p.leader_key, 0).unwrap();
    assert!(
        matches!(duties.as_slice(), [ChainAction::ConcludeAndTransferAllAssets { candidate, .. }]
        if candidate.variable_part.is_final && candidate.variable_part.turn_num == 4 && candidate.sigs.len() == 2)
    );
}

#[test]
fn close_is_refused_while_guarantees_remain() {
    let mut p = Pair::open(100);
    p.countersigned_add(0xa1, 30, 0);
    assert!(matches!(
        p.leader.close(&p.leader_key),
        Err(LedgerError::Usage(LedgerUsageError::NotEmpty(_)))
    ));
    assert!(matches!(
        p.follower.close(&p.follower_key),
        Err(LedgerError::Usage(LedgerUsageError::NotEmpty(_)))
    ));
}

#[test]
fn leader_queues_consecutive_turns_and_resends_the_whole_queue() {
    let mut p = Pair::open(100);
    let a = p.add(0xa1, 10, 0);
    let b = p.add(0xa2, 10, 0);
    p.leader.propose(&p.leader_key, a).unwrap();
    let _lost = p.take_proposals();
    p.leader.propose(&p.leader_key, b).unwrap();
    let m = p.take_proposals();
    let LedgerBody::Proposals { updates } = &m.body else {
        panic!()
    };
    assert_eq!(
        updates.iter().map(|u| u.state.turn_num).collect::<Vec<_>>(),
        [2, 3]
    );
    p.follower
        .handle_message(&p.follower_key, p.leader_key.address(), &m)
        .unwrap();
    // b is not next: a's objective must sign first.
    assert!(!p.follower.countersign_next(&p.follower_key, &b).unwrap());
    assert!(p.follower.countersign_next(&p.follower_key, &a).unwrap());
    assert!(p.follower.countersign_next(&p.follower_key, &b).unwrap());
    p.pump();
    assert_eq!(p.leader.countersigned().unwrap().turn_num, 3);
    assert_eq!(p.leader.pending().count(), 0);
}

/// A hostile leader's proposals message: a valid update for `proposal`, with `edit` applied to the
/// signed state (re-signed by the leader, so only the follower's checks can catch it).
fn hostile(
    p: &mut Pair,
    proposal: Proposal,
    turn: u64,
    edit: impl FnOnce(&mut VariablePart),
) -> LedgerMessage {
    let base = p.follower.countersigned().unwrap().clone();
    let participants = p.leader.participants();
    let mut vars = base.apply(&proposal, &participants).unwrap_or(base);
    vars.turn_num = turn;
    let mut state = vars.variable_part(Address::ZERO, &participants, false);
    edit(&mut state);
    let signature = p
        .leader_key
        .sign_eth_message(&state.hash(p.leader.id()))
        .unwrap();
    LedgerMessage {
        ledger_id: p.leader.id(),
        body: LedgerBody::Proposals {
            updates: vec![SignedUpdate {
                proposal,
                state,
                signature,
            }],
        },
    }
}

fn refused(p: &mut Pair, m: &LedgerMessage) -> LedgerPeerError {
    let before = p.follower.to_bytes();
    let err = p
        .follower
        .handle_message(&p.follower_key, p.leader_key.address(), m)
        .unwrap_err();
    assert_eq!(p.follower.to_bytes(), before, "state changed on {err}");
    assert!(p.follower.poll_output().is_none());
    match err {
        LedgerError::Peer(e) => e,
        e => panic!("not a peer error: {e}"),
    }
}

#[test]
fn type_one_guarantee_is_refused() {
    let mut p = Pair::open(100);
    let add = p.add(0xa1, 30, 0);
    let m = hostile(&mut p, add, 2, |s| {
        s.outcome[0].allocations[2].allocation_type = 1
    });
    assert_eq!(
        refused(&mut p, &m),
        LedgerPeerError::NotAGuarantee {
            index: 2,
            allocation_type: 1
        }
    );
}

#[test]
fn malformed_metadata_and_unsorted_guarantees_are_refused() {
    let mut p = Pair::open(100);
    let add = p.add(0xa1, 30, 0);
    let m = hostile(&mut p, add, 2, |s| {
        s.outcome[0].allocations[2].metadata = Bytes::from(vec![0u8; 63])
    });
    assert_eq!(
        refused(&mut p, &m),
        LedgerPeerError::BadGuaranteeMetadata(2)
    );
    let m = hostile(&mut p, add, 2, |s| {
        let g = s.outcome[0].allocations[2].clone();
        let mut g2 = g;
        g2.destination = B256::repeat_byte(0x01);
        s.outcome[0].allocations[0].amount -= U256::from(1);
        g2.amount = U256::from(1);
        s.outcome[0].allocations.push(g2);
    });
    assert_eq!(refused(&mut p, &m), LedgerPeerError::UnsortedGuarantees);
}

#[test]
fn state_that_is_not_the_proposal_is_refused() {
    let mut p = Pair::open(100);
    let add = p.add(0xa1, 30, 0);
    // The leader signs a state that also moves 5 of its follower's... to itself: total kept,
    // but not what the proposal says.
    let m = hostile(&mut p, add, 2, |s| {
        s.outcome[0].allocations[0].amount += U256::from(5);
        s.outcome[0].allocations[2].amount -= U256::from(5);
    });
    assert_eq!(refused(&mut p, &m), LedgerPeerError::StateMismatch(2));
    // A total that grows.
    let m = hostile(&mut p, add, 2, |s| {
        s.outcome[0].allocations[1].amount += U256::from(1)
    });
    assert_eq!(refused(&mut p, &m), LedgerPeerError::StateMismatch(2));
}

#[test]
fn skipped_and_replayed_turns_are_refused() {
    let mut p = Pair::open(100);
    let add = p.add(0xa1, 30, 0);
    let m = hostile(&mut p, add, 3, |_| {});
    assert_eq!(
        refused(&mut p, &m),
        LedgerPeerError::SkippedTurn {
            expected: 2,
            got: 3
        }
    );
    let m = hostile(&mut p, add, 1, |_| {});
    assert_eq!(
        refused(&mut p, &m),
        LedgerPeerError::StaleTurn { current: 1, got: 1 }
    );
}

#[test]
fn overdrawn_balance_is_refused() {
    let mut p = Pair::open(100);
    let add = p.add(0xa1, 101, 0);
    let m = hostile(&mut p, add, 2, |_| {});
    assert!(matches!(
        refused(&mut p, &m),
        LedgerPeerError::InvalidProposal(ProposalError::InsufficientFunds { .. })
    ));
    // The follower's own balance (0) cannot be taken either.
    let mut add = p.add(0xa2, 10, 0);
    if let Proposal::Add { left_deposit, .. } = &mut add {
        *left_deposit = U256::ZERO;
    }
    let m = hostile(&mut p, add, 2, |_| {});
    assert!(matches!(
        refused(&mut p, &m),
        LedgerPeerError::InvalidProposal(ProposalError::InsufficientFunds { .. })
    ));
}

#[test]
fn unexpected_proposal_for_our_target_is_not_countersigned() {
    let mut p = Pair::open(100);
    let expected = p.add(0xa1, 30, 0);
    let mut other = expected;
    if let Proposal::Add { fee, .. } = &mut other {
        *fee = U256::from(1);
    }
    p.propose(other);
    let before = p.follower.to_bytes();
    assert!(matches!(
        p.follower.countersign_next(&p.follower_key, &expected),
        Err(LedgerError::Peer(LedgerPeerError::ProposalMismatch { .. }))
    ));
    assert_eq!(p.follower.to_bytes(), before);
    assert!(p.follower.poll_output().is_none());
}

#[test]
fn bad_countersignature_is_refused() {
    let mut p = Pair::open(100);
    let add = p.add(0xa1, 30, 0);
    p.leader.propose(&p.leader_key, add).unwrap();
    p.drain();
    // The follower signs a state with a fee the proposal does not show.
    let mut vars = p
        .leader
        .countersigned()
        .unwrap()
        .apply(&add, &p.leader.participants())
        .unwrap();
    vars.balances[0] -= U256::from(1);
    vars.balances[1] += U256::from(1);
    let state = vars.variable_part(Address::ZERO, &p.leader.participants(), false);
    let signature = p
        .follower_key
        .sign_eth_message(&state.hash(p.leader.id()))
        .unwrap();
    let m = LedgerMessage {
        ledger_id: p.leader.id(),
        body: LedgerBody::Countersign {
            turn_num: 2,
            signature,
        },
    };
    let before = p.leader.to_bytes();
    assert_eq!(
        p.leader
            .handle_message(&p.leader_key, p.follower_key.address(), &m),
        Err(LedgerError::Peer(LedgerPeerError::BadSignature(
            "countersignature"
        )))
    );
    assert_eq!(p.leader.to_bytes(), before);
}

#[test]
fn open_with_another_app_is_refused() {
    let leader_key = LocalSigner::random();
    let follower_key = LocalSigner::random();
    let fixed = FixedPart {
        participants: vec![leader_key.address(), follower_key.address()],
        channel_nonce: 7,
        app_definition: Address::ZERO,
        challenge_duration: 100,
    };
    let mut leader = Ledger::open(&leader_key, fixed, Address::ZERO, u(10)).unwrap();
    let Some(LedgerOutput::Send(open)) = leader.poll_output() else {
        panic!()
    };
    assert_eq!(
        Ledger::accept_open(&follower_key, CONSENSUS_APP, leader_key.address(), &open).unwrap_err(),
        LedgerError::Peer(LedgerPeerError::InvalidOpen("app is not ConsensusApp"))
    );
}

#[test]
fn stale_challenge_gets_a_checkpoint_and_foreign_payout_alerts() {
    let mut p = Pair::open(100);
    p.countersigned_add(0xa1, 30, 0);
    p.drain();
    // The leader challenges with the postfund (turn 1), before the Add.
    let participants = p.leader.participants();
    let stale = LedgerVars::funding(1, u(100)).variable_part(Address::ZERO, &participants, false);
    let candidate = SignedVariablePart {
        variable_part: stale,
        sigs: vec![],
    };
    let id = p.follower.id();
    p.follower
        .handle_chain_event(
            &p.follower_key,
            10,
            &ChainEvent::ChallengeRegistered {
                channel_id: id,
                finalizes_at: 110,
                proof: vec![],
                candidate,
            },
        )
        .unwrap();
    let duties = p.follower.chain_duties(&p.follower_key, 20).unwrap();
    let [ChainAction::Checkpoint { candidate, .. }] = duties.as_slice() else {
        panic!("{duties:?}")
    };
    assert_eq!(candidate.variable_part.turn_num, 2);
    assert_eq!(candidate.sigs.len(), 2);
    // Challenge with the countersigned state instead, let it finalize: a payout while the
    // guarantee is still in the finalized outcome is the §0.4 transfer hazard.
    let c = SignedVariablePart {
        variable_part: p.follower.countersigned().unwrap().variable_part(
            Address::ZERO,
            &participants,
            false,
        ),
        sigs: vec![],
    };
    p.follower
        .handle_chain_event(
            &p.follower_key,
            30,
            &ChainEvent::ChallengeRegistered {
                channel_id: id,
                finalizes_at: 130,
                proof: vec![],
                candidate: c,
            },
        )
        .unwrap();
    p.follower.handle_timeout(130);
    assert!(p.follower.finalized_with_guarantee(B256::repeat_byte(0xa1)));
    assert!(
        p.follower
            .chain_duties(&p.follower_key, 131)
            .unwrap()
            .is_empty()
    );
    p.drain();
    p.follower
        .handle_chain_event(
            &p.follower_key,
            140,
            &ChainEvent::AllocationUpdated {
                channel_id: id,
                asset_index: 0,
                initial_holdings: u(100),
                final_holdings: u(70),
            },
        )
        .unwrap();
    let mut alerted = false;
    while let Some(o) = p.follower.poll_output() {
        alerted |= matches!(o, LedgerOutput::Event(LedgerEvent::UnexpectedPayout { .. }));
    }
    assert!(alerted);
}

#[test]
fn snapshot_roundtrip_and_resend() {
    let mut p = Pair::open(100);
    let add = p.add(0xa1, 30, 0);
    p.leader.propose(&p.leader_key, add).unwrap();
    p.drain(); // the proposals message is lost with the crash
    let mut restored = Ledger::from_bytes(&p.leader.to_bytes()).unwrap();
    assert_eq!(restored.to_bytes(), p.leader.to_bytes());
    restored.resend();
    p.leader = restored;
    p.pump();
    assert!(p.follower.countersign_next(&p.follower_key, &add).unwrap());
    p.pump();
    assert_eq!(p.leader.countersigned().unwrap().turn_num, 2);
    let g = &p
        .leader
        .countersigned()
        .unwrap()
        .variable_part(Address::ZERO, &p.leader.participants(), false)
        .outcome[0]
        .allocations[2];
    assert_eq!(g.allocation_type, allocation_type::GUARANTEE);
    let _ = Allocation::simple(Address::ZERO, U256::ZERO);
}
