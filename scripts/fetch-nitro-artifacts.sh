#!/usr/bin/env sh
# Fetches the compiled Nitro v2 contracts the payment-channel Ethereum tests deploy.
#
# Source: the npm tarball @statechannels/nitro-protocol@2.0.1-alpha.6 (go-nitro generation,
# solc 0.8.17), checked against the registry's published sha512 integrity below. The tarball's
# Hardhat artifacts (ABI + creation bytecode) are copied to the cache directory as
#   NitroAdjudicator.json  VirtualPaymentApp.json  ConsensusApp.json
# (ConsensusApp is the app of ledger channels, see payment_channel::ledger).
# Cache directory: $NITRO_ARTIFACTS_DIR, default <repo>/target/nitro-artifacts (gitignored).
# Nothing is committed: no artifact, no contract source.
set -eu
version=2.0.1-alpha.6
# `npm view @statechannels/nitro-protocol@2.0.1-alpha.6 dist.integrity`
integrity='sha512-VehCgq3AOVTGCvGGIoF23YyQX+x1IbLzByFWbqPovucsm9vW0udR7r8Okw9hC0ZHanHOjQH5KxJL6aKUnrXinw=='

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${NITRO_ARTIFACTS_DIR:-$repo/target/nitro-artifacts}
# A cache written before ConsensusApp.json was added lacks it and is refetched.
if [ -f "$out/NitroAdjudicator.json" ] && [ -f "$out/VirtualPaymentApp.json" ] \
    && [ -f "$out/ConsensusApp.json" ] && [ "$(cat "$out/VERSION" 2>/dev/null)" = "$version" ]; then
    echo "nitro artifacts $version already in $out"
    exit 0
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@statechannels/nitro-protocol@$version" >/dev/null)
tgz="$work/statechannels-nitro-protocol-$version.tgz"
got="sha512-$(node -e 'const c=require("crypto"),f=require("fs");process.stdout.write(c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$tgz")"
if [ "$got" != "$integrity" ]; then
    echo "integrity mismatch for nitro-protocol@$version: expected $integrity, got $got" >&2
    exit 1
fi
tar xzf "$tgz" -C "$work"
art="$work/package/dist/artifacts/contracts"
cp "$art/NitroAdjudicator.sol/NitroAdjudicator.json" "$out/NitroAdjudicator.json"
cp "$art/VirtualPaymentApp.sol/VirtualPaymentApp.json" "$out/VirtualPaymentApp.json"
cp "$art/ConsensusApp.sol/ConsensusApp.json" "$out/ConsensusApp.json"
echo "$version" > "$out/VERSION"
echo "nitro artifacts $version -> $out"
