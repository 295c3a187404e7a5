use super::*;

#[test]
fn phase_order_is_lifecycle_order() {
    use PhaseKind::*;
    let order = [
        Proposed,
        Funding,
        AwaitingPostfund,
        Running,
        Closing,
        Closed,
        Finalized,
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]));
}
