"""Throughput of the switch's security work, on one core.

    python -m benchmarks.security [--json] [--quick]

Measures, per operation: TDES DUKPT derivation of a transaction's keys
(uncached from the BDK, and the host's realistic case: the next counter of
a known device, served by the prefix cache), PIN block decrypt + PVV verify,
retail MAC verify and generate of a 300-byte message (a fresh key every
time, as with DUKPT), and the whole security work of one financial request
(derive, verify the request MAC, verify the PIN, MAC a 300-byte response)
through :class:`~iso_switch.security.SoftwareHsm`. Terminal-side work
(making the MACs and PIN blocks) is done before the clock starts.

Baselines run in the same process: psec (pure-Python-glue reference
implementation used as a second opinion in the tests) for the retail MAC
and PIN block decode, and the uncached derivation for the cached one.
It also fills every cache to its bound and reports the memory that costs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
import warnings
from collections.abc import Callable, Sequence

from iso_switch.security import SoftwareHsm, _ciphers, dukpt, pinblock
from iso_switch.security.dukpt import PREFIX_CACHE_ENTRIES, DukptDeriver
from iso_switch.security.hsm import KSN_CACHE_ENTRIES
from iso_switch.security.mac import retail_mac, verify_retail_mac

BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # public X9.24 test key
KEY_SET_ID = "FFFF987654"
PAN = "4761739001010010"
PIN = "1234"
MESSAGE_BYTES = 300
# A 0210 on ascii87-hex echoing DE2-DE49 with DE37-DE39: about 128 bytes
# before its MAC. The headline figure MACs a 300-byte response anyway.
TYPICAL_RESPONSE_BYTES = 128
DEVICES = 64
REPEATS = 3


def _ksn(device: int, counter: int) -> str:
    """KSN of the demo key set for ``device`` (19 bits) and ``counter``."""
    tail = (device << 21) | counter
    return KEY_SET_ID + f"{tail:010X}"


def _valid_counters(count: int, start: int = 1) -> list[int]:
    """The next ``count`` counters a terminal would use (<= 10 one-bits)."""
    out: list[int] = []
    counter = start
    while len(out) < count:
        if counter.bit_count() <= 10:
            out.append(counter)
        counter += 1
    return out


def _rate(func: Callable[[int], None], count: int) -> float:
    """Best of REPEATS runs of ``func(count)``: operations per second."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        func(count)
        best = min(best, time.perf_counter() - start)
    return count / best


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(quick: bool = False) -> dict[str, object]:
    """Every figure, measured in a fixed order (later steps find the caches
    the earlier ones filled, as a running switch would)."""
    count = 2_000 if quick else 20_000
    message = secrets.token_bytes(MESSAGE_BYTES)
    ops: dict[str, float] = {}
    baselines: dict[str, float] = {}
    _measure_dukpt(count, ops, baselines)
    keys = _measure_macs(count, message, ops)
    request_ops, count = _measure_requests(count, message, ops)
    _measure_psec_baselines(count, keys, message, ops, baselines)
    memory = _cache_memory()
    return {
        "ops_s": {name: round(value) for name, value in ops.items()},
        "request_security_ops_s": round(request_ops),
        "baseline_ops_s": {name: round(value) for name, value in baselines.items()},
        "cache_memory_mib": memory,
    }


def _measure_dukpt(count: int, ops: dict[str, float], baselines: dict[str, float]) -> None:
    """DUKPT derivation uncached (BDK -> IPEK -> transaction key and its
    variants), then the host's case: each device's next counter with the
    prefix cache warm (counters continue across repeats so every
    derivation is a new KSN), against the uncached figure."""
    ksns = [_ksn(d % DEVICES, c) for d, c in enumerate(_valid_counters(count, 0x1000))]

    def derive_uncached(n: int) -> None:
        for ksn in ksns[:n]:
            dukpt.DukptKeys.from_transaction_key(dukpt.derive_transaction_key(BDK, ksn))

    ops["dukpt_derive_uncached"] = _rate(derive_uncached, min(count, 5_000))

    deriver = DukptDeriver(BDK)
    next_counter = [1] * DEVICES

    def derive_sequential(n: int) -> None:
        for i in range(n):
            device = i % DEVICES
            counter = next_counter[device]
            while counter.bit_count() > 10:
                counter += 1
            next_counter[device] = counter + 1
            deriver.keys(_ksn(device, counter))

    derive_sequential(DEVICES)
    ops["dukpt_derive_next_counter"] = _rate(derive_sequential, count)
    baselines["dukpt_derive_next_counter"] = ops["dukpt_derive_uncached"]


def _measure_macs(count: int, message: bytes, ops: dict[str, float]) -> list[bytes]:
    """MACs of a 300-byte message, a fresh key every time (cipher caches
    miss). Returns the keys, for the psec baseline."""
    keys = [secrets.token_bytes(16) for _ in range(count)]
    macs = [retail_mac(key, message) for key in keys]

    def mac_generate(n: int) -> None:
        for key in keys[:n]:
            retail_mac(key, message)

    def mac_verify(n: int) -> None:
        for key, mac in zip(keys[:n], macs[:n], strict=True):
            if not verify_retail_mac(key, message, mac):
                raise AssertionError("MAC did not verify")

    ops["mac_generate_300B"] = _rate(mac_generate, count)
    ops["mac_verify_300B"] = _rate(mac_verify, count)
    return keys


# A terminal's request as the host receives it: (KSN, message, its MAC, PIN block).
_SignedRequest = tuple[str, bytes, bytes, bytes]


def _signed_requests(total: int, message: bytes) -> list[_SignedRequest]:
    """``total`` requests from DEVICES terminals, each with a fresh KSN,
    MACed and carrying a PIN block (terminal work, done before any clock)."""
    requests: list[_SignedRequest] = []
    for i, counter in enumerate(_valid_counters(total // DEVICES + 2)):
        for device in range(DEVICES):
            if len(requests) >= total:
                break
            ksn = _ksn(device, counter)
            transaction_key = dukpt.derive_transaction_key(BDK, ksn)
            request = message[:-8] + i.to_bytes(8, "big")
            requests.append((
                ksn,
                request,
                retail_mac(dukpt.mac_request_key(transaction_key), request),
                pinblock.encrypt_pin_block(dukpt.pin_key(transaction_key), PIN, PAN, 0),
            ))
    return requests


def _measure_requests(count: int, message: bytes, ops: dict[str, float]) -> tuple[float, int]:
    """PIN verify alone, then the whole security work of a request through
    the HSM, answered with a 300-byte and a typical response. Returns the
    headline figure and how many fresh requests per run were left for the
    second answer size (the count the later baselines use)."""
    hsm = SoftwareHsm.from_bdks({KEY_SET_ID: BDK}, pvk=secrets.token_bytes(16))
    verification = hsm.make_pin_verification_data(PAN, PIN)
    requests = _signed_requests(count * (2 * REPEATS + 1), message)
    cursor = [0]

    def pin_verify(n: int) -> None:
        # KSN keys derived already (cache warm): decrypt + decode + PVV.
        ksn, _, _, block = requests[0]
        for _ in range(n):
            if not hsm.verify_pin(ksn, block, PAN, verification):
                raise AssertionError("PIN did not verify")

    ops["pin_decrypt_verify"] = _rate(pin_verify, count)

    def requests_answered_with(response: bytes) -> Callable[[int], None]:
        """The security work of ``n`` fresh requests, each answered with a
        MACed ``response``; every run takes the next unused requests."""

        def run(n: int) -> None:
            start = cursor[0]
            for ksn, request, mac, block in requests[start : start + n]:
                if not hsm.verify_request_mac(ksn, request, mac):
                    raise AssertionError("request MAC did not verify")
                if not hsm.verify_pin(ksn, block, PAN, verification):
                    raise AssertionError("PIN did not verify")
                hsm.generate_response_mac(ksn, response)
            cursor[0] = start + n

        return run

    request_ops = _rate(requests_answered_with(message), count)
    ops["request_security_300B_request_300B_response"] = request_ops
    count = min(count, (len(requests) - cursor[0]) // REPEATS)
    ops["request_security_300B_request_128B_response"] = _rate(
        requests_answered_with(message[:TYPICAL_RESPONSE_BYTES]), count
    )
    return request_ops, count


def _measure_psec_baselines(
    count: int, keys: list[bytes], message: bytes, ops: dict[str, float],
    baselines: dict[str, float],
) -> None:
    """psec (a dev dependency, baseline only) for the retail MAC and the
    ISO 0 PIN block decode, beside ours; skipped when psec is absent."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import psec
        except ImportError:
            return

    def psec_mac(n: int) -> None:
        for key in keys[:n]:
            psec.mac.generate_retail_mac(key, key, message, 1)

    clear = pinblock.encode_iso0(PIN, PAN)

    def psec_pin(n: int) -> None:
        for _ in range(n):
            psec.pinblock.decode_pinblock_iso_0(clear, PAN)

    def our_pin(n: int) -> None:
        for _ in range(n):
            pinblock.decode_iso0(clear, PAN)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        baselines["mac_generate_300B"] = _rate(psec_mac, min(count, 5_000))
        ops["pin_block_decode_iso0"] = _rate(our_pin, count)
        baselines["pin_block_decode_iso0"] = _rate(psec_pin, count)


def _cache_memory() -> dict[str, float]:
    """RSS growth when each cache is filled to its bound."""
    mib = 1024 * 1024
    _ciphers.clear_caches()
    before = _rss_bytes()
    deriver = DukptDeriver(BDK)
    device = 0
    while deriver.cached_prefixes < PREFIX_CACHE_ENTRIES:
        for counter in _valid_counters(256):
            deriver.transaction_key(_ksn(device, counter))
        device += 1
    prefix = (_rss_bytes() - before) / mib
    before = _rss_bytes()
    hsm = SoftwareHsm.from_bdks({KEY_SET_ID: BDK})
    for i, counter in enumerate(_valid_counters(KSN_CACHE_ENTRIES)):
        hsm.dukpt_keys(_ksn(i % DEVICES, counter))
    per_ksn = (_rss_bytes() - before) / mib
    before = _rss_bytes()
    for _ in range(_ciphers.ECB_CONTEXT_CACHE_SIZE):
        key = secrets.token_bytes(16)
        _ciphers.tdes_ecb_encrypt(key, bytes(8))
        _ciphers.tdes_ecb_decrypt(key, bytes(8))
        _ciphers.aes_ecb_encrypt(key, bytes(16))
        _ciphers.aes_ecb_decrypt(key, bytes(16))
    contexts = (_rss_bytes() - before) / mib
    return {
        f"dukpt_prefix_cache_{PREFIX_CACHE_ENTRIES}": round(prefix, 1),
        f"ksn_key_cache_{KSN_CACHE_ENTRIES}": round(per_ksn, 1),
        f"cipher_context_caches_4x{_ciphers.ECB_CONTEXT_CACHE_SIZE}": round(contexts, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.security",
        description="Security operations per second on one core (see the module docstring).",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args(argv)
    result = measure(quick=args.quick)
    if args.json:
        print(json.dumps(result))
        return 0
    ops = result["ops_s"]
    baselines = result["baseline_ops_s"]
    assert isinstance(ops, dict) and isinstance(baselines, dict)
    for name, value in ops.items():
        line = f"{name:32s} {value:>10,d} ops/s"
        if name in baselines:
            base = baselines[name]
            line += f"   baseline {base:>9,d} ops/s  ratio {value / base:.1f}x"
        print(line)
    print(f"request security work: {result['request_security_ops_s']:,d} per second "
          "(target 20,000)")
    print("cache memory (MiB, filled to bound):", result["cache_memory_mib"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
