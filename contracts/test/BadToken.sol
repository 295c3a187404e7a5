// SPDX-License-Identifier: MIT
pragma solidity 0.8.17;

import {ERC20} from '@openzeppelin/contracts/token/ERC20/ERC20.sol';

/**
 * @title BadToken
 * @notice A misbehaving ERC-20 for tests only: what the channel code must survive when a
 * channel's asset is a token that does not move what it is asked to move.
 * @dev Mints 10_000_000_000 tokens (18 decimals) to `owner`. `mode`:
 *  0 - a plain ERC-20;
 *  1 - fee on transfer: `transfer` and `transferFrom` take the whole amount from the sender and
 *      burn 1% of it (rounded down), so the recipient gets 99% and a deposit leaves the
 *      adjudicator holding less than it credits;
 *  2 - `transferFrom` returns false and moves nothing (a deposit through SafeERC20 reverts);
 *      `transfer` is plain.
 */
contract BadToken is ERC20 {
    uint8 private immutable _mode;

    constructor(address owner, uint8 mode) ERC20('BadToken', 'BAD') {
        _mode = mode;
        _mint(owner, 10_000_000_000 * 10 ** 18);
    }

    function transferFrom(address from, address to, uint256 amount) public override returns (bool) {
        if (_mode == 2) return false;
        return super.transferFrom(from, to, amount);
    }

    /// @dev Both `transfer` and `transferFrom` move tokens through here. The fee is burnt from
    /// the recipient after the plain transfer, so a transfer reverts exactly when and as
    /// OpenZeppelin's does.
    function _transfer(address from, address to, uint256 amount) internal override {
        super._transfer(from, to, amount);
        if (_mode == 1) _burn(to, amount / 100);
    }
}
