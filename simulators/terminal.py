"""``iso-switch-sim``: a POS terminal simulator for the switch.

One-shot transactions (``purchase``, ``auth``, ``complete``, ``withdraw``,
``refund``, ``balance``, ``transfer``, ``reverse``, ``echo``, ``signon``,
``signoff``), a ``script`` of such commands, or an ``interactive`` prompt.
Each answer is printed decoded and masked (the same masking as
``iso-switch decode``), with the meaning of its response code, DE54 balances
and the verdict on the response MAC.

PINs: never printed or stored. ``$ISO_SWITCH_SIM_PIN`` (preferred) or
``--pin -`` (prompt without echo); ``--pin 1234`` works but leaves the PIN in
shell history. The DUKPT counter and STAN live in a state file (default
``./var/sim-state.json``) so consecutive runs never replay a KSN (``63``).

Exit status: 0 every answer approved (DE39 00), 1 some answer declined,
2 usage error, 3 no answer (connection refused, closed or timed out).
"""

from __future__ import annotations

import argparse
import cmd
import contextlib
import getpass
import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, NoReturn, TextIO

import trio

from iso_switch.cli.codec_cmd import format_message, mask_free_text, masked_fields
from iso_switch.codec import load_spec
from iso_switch.codec.subfields import SubfieldError, parse_de54
from iso_switch.protocol.framing import FramingKind
from simulators._state import SimState, StateError
from simulators.client import (
    DEFAULT_TIMEOUT_S,
    DEMO_BDK_HEX,
    DEMO_KSN_PREFIX,
    DEMO_MERCHANT,
    STAN_MAX,
    DeviceError,
    MacVerdict,
    Sealed,
    SwitchClient,
    SwitchClientError,
    TerminalDevice,
    describe_response_code,
    open_switch_client,
    tpdu_argument,
)

PIN_ENV: Final = "ISO_SWITCH_SIM_PIN"
DEFAULT_STATE_FILE: Final = "./var/sim-state.json"
DEFAULT_TERMINAL: Final = "TERM0001"
MINOR_DIGITS: Final = 2  # CNY (156), the demo currency
SCRIPT_LINES_MAX: Final = 10_000
EXIT_APPROVED: Final = 0
EXIT_DECLINED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_ANSWER: Final = 3
_PORTS: Final = {"ascii87-hex": 8583, "ascii87-bin": 8584}
_PIN_REQUIRED: Final = frozenset({"withdraw", "balance", "transfer"})
_NETWORK: Final = {"echo": "301", "signon": "001", "signoff": "002"}


class UsageError(ValueError):
    """A command's arguments are wrong (argparse would say exit 2)."""


class _MaskingParser(argparse.ArgumentParser):
    """argparse echoes bad arguments in its errors; a mistyped command line
    may hold a PAN, so every error message is masked first."""

    def error(self, message: str) -> NoReturn:
        super().error(mask_free_text(message))


def parse_amount(text: str) -> int:
    """``"12.34"`` -> 1234 minor units (2 decimals: CNY)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError("an amount looks like 12.34") from None
    minor = value.scaleb(MINOR_DIGITS)
    if not value.is_finite() or minor != minor.to_integral_value() or value < 0:
        raise argparse.ArgumentTypeError(
            f"an amount is non-negative with at most {MINOR_DIGITS} decimals")
    return int(minor)


def _stan(text: str) -> str:
    if not (text.isdigit() and 1 <= len(text) <= 6):
        raise argparse.ArgumentTypeError("a STAN is 1 to 6 digits")
    return f"{int(text):06d}"


# -- parsers ----------------------------------------------------------------------


def _card_options(parser: argparse.ArgumentParser, *, amount: bool = True,
                  pin_help: str = "optional") -> None:
    parser.add_argument("--pan", required=True, help="card number (printed masked only)")
    if amount:
        parser.add_argument("--amount", required=True, type=parse_amount,
                            help="amount in currency units, e.g. 12.34")
    parser.add_argument("--expiry", help="card expiry YYMM (DE14)")
    parser.add_argument(
        "--pin", metavar="PIN|-",
        help=f"PIN ({pin_help}): '-' prompts without echo; default ${PIN_ENV} when set"
        + (", else a prompt on a terminal" if pin_help == "required" else ""))
    parser.add_argument("--no-pin", action="store_true", help="send no PIN block at all")


def add_transaction_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """The commands usable one-shot, in a script and at the prompt."""
    p = sub.add_parser("purchase", help="0200 purchase (00)",
                       description="A purchase: debits the card, credits the merchant.")
    _card_options(p)
    p = sub.add_parser("auth", help="0100 authorization: places a hold",
                       description="An authorization (0100) holding the amount until a "
                       "completion (complete --stan) or a reversal.")
    _card_options(p)
    p = sub.add_parser("complete", help="0220 completion of an earlier auth",
                       description="Completion advice (0220) of the authorization with STAN "
                       "--stan sent by this device (remembered in the state file); --amount "
                       "is the final amount (default: the held one). DE2 is mandatory, so "
                       "--pan names the card again.")
    p.add_argument("--stan", required=True, type=_stan, help="STAN of the 0100")
    p.add_argument("--pan", required=True, help="card number of the authorization")
    p.add_argument("--amount", type=parse_amount, help="final amount (at most the held one)")
    p = sub.add_parser("withdraw", help="0200 cash withdrawal (01, PIN required)",
                       description="A cash withdrawal; TERM0002 may not do them (58).")
    _card_options(p, pin_help="required")
    p = sub.add_parser("refund", help="0200 refund (20)",
                       description="A refund: credits the card, debits the merchant.")
    _card_options(p)
    p = sub.add_parser("balance", help="0200 balance inquiry (30/31, PIN required)",
                       description="A balance inquiry; the answer's DE54 balances are shown.")
    _card_options(p, amount=False, pin_help="required")
    p.add_argument("--code", choices=("30", "31"), default="30", help="processing code")
    p = sub.add_parser("transfer", help="0200 funds transfer (40, PIN required)",
                       description="A transfer from the card's account (or --from-account, "
                       "which the card must own) to --to-account.")
    _card_options(p, pin_help="required")
    p.add_argument("--to-account", required=True, help="destination account (DE103)")
    p.add_argument("--from-account", help="source account (DE102)")
    p = sub.add_parser("reverse", help="0400/0420 reversal of an earlier request",
                       description="Reversal (0400, or the 0420 advice with --advice) of the "
                       "request with STAN --stan sent by this device; --amount reverses "
                       "partially, down to that actual amount (DE95).")
    p.add_argument("--stan", required=True, type=_stan, help="STAN of the original")
    p.add_argument("--advice", action="store_true", help="send an 0420 advice")
    p.add_argument("--amount", type=parse_amount, help="actual amount (partial reversal)")
    for name, code in _NETWORK.items():
        sub.add_parser(name, help=f"0800 network management (DE70 {code})",
                       description=f"An 0800 with DE70 {code}; never MACed.")


def build_parser() -> argparse.ArgumentParser:
    parser = _MaskingParser(
        prog="iso-switch-sim",
        description="A POS terminal simulator speaking the switch's terminal interface: "
        "DUKPT PIN blocks and retail MACs, every request type, answers printed masked with "
        "their meaning, balances and MAC verdict. Exit status: 0 approved, 1 declined, "
        "2 usage error, 3 no answer.",
        epilog=f"PINs: prefer ${PIN_ENV} or --pin - (prompt); they are never printed.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="switch address")
    parser.add_argument("--port", type=int, help="listener port (default 8583 for "
                        "ascii87-hex, 8584 for ascii87-bin)")
    parser.add_argument("--dialect", default="ascii87-hex",
                        help="listener dialect: ascii87-hex (default) or ascii87-bin")
    parser.add_argument("--framing", default="binary2",
                        choices=[kind.value for kind in FramingKind], help="length header")
    parser.add_argument("--tpdu", type=tpdu_argument, metavar="HEX",
                        help="the listener frames with a TPDU: send this one (10 hex, e.g. "
                        "6000120000)")
    parser.add_argument("--terminal", default=DEFAULT_TERMINAL,
                        help=f"terminal ID, DE41 (default {DEFAULT_TERMINAL}: MAC required)")
    parser.add_argument("--merchant", default=DEMO_MERCHANT, help="merchant ID, DE42")
    parser.add_argument("--acquirer-id", help="acquiring institution id, DE32")
    parser.add_argument("--bdk-env", metavar="VAR",
                        help="environment variable holding the BDK (32 hex); default the "
                        "public demo BDK")
    parser.add_argument("--keys-dir", help="take the BDK from this key store instead (its "
                        "master key from $ISO_SWITCH_MASTER_KEY, or the demo one)")
    parser.add_argument("--ksn", "--ksn-prefix", dest="ksn_prefix", default=DEMO_KSN_PREFIX,
                        help=f"KSN prefix, 15 hex (default {DEMO_KSN_PREFIX})")
    parser.add_argument("--device", type=int, default=0,
                        help="device index added to the KSN's device id (default 0)")
    parser.add_argument("--stan", dest="first_stan", type=int, metavar="N",
                        help="STAN of the next request (default: continue from the state "
                        "file, else 1)")
    parser.add_argument("--state", default=DEFAULT_STATE_FILE,
                        help=f"state file for DUKPT counters and STANs (default "
                        f"{DEFAULT_STATE_FILE}); 'none' keeps nothing")
    parser.add_argument("--no-mac", action="store_true", help="send requests without a MAC")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds to wait for an answer (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--json", action="store_true",
                        help="print one masked JSON object per answer")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_transaction_commands(sub)
    script = sub.add_parser("script", help="run commands from a file, one per line",
                            description="Run commands from FILE ('-' for standard input), "
                            "one per line in the same syntax as the one-shot commands "
                            "(e.g. 'purchase --pan 4761739001010010 --amount 1.00'); blank "
                            "lines and lines starting with # are skipped. One connection.")
    script.add_argument("file", help="script file, or - for standard input")
    sub.add_parser("interactive", help="a prompt with history",
                   description="Type commands as on the command line, without "
                   "'iso-switch-sim'; 'help' lists them, 'quit' leaves.")
    return parser


def build_line_parser() -> argparse.ArgumentParser:
    """The parser of one script or prompt line (transaction commands only)."""
    parser = _MaskingParser(prog="", add_help=False, exit_on_error=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_transaction_commands(sub)
    return parser


# -- the session ------------------------------------------------------------------


class Session:
    """One simulated device and its state file, printing to ``out``."""

    def __init__(self, options: argparse.Namespace, out: TextIO,
                 read_pin: Callable[[str], str] = getpass.getpass) -> None:
        self.options = options
        self.out = out
        self.read_pin = read_pin
        state_path = None if options.state == "none" else Path(options.state)
        self.state = SimState(state_path)
        self.device = _make_device(options)
        saved = self.state.device(self.device.initial_ksn)
        self.saved = saved
        if saved.counter or saved.stan is not None or options.first_stan is not None:
            last_stan = saved.stan if options.first_stan is None else options.first_stan - 1
            self.device = _make_device(options, counter=saved.counter, stan=last_stan)
        self.spec = load_spec(options.dialect)
        self.descs = {key: str(props.get("desc", "")) for key, props in self.spec.items()}
        self.worst = EXIT_APPROVED

    @property
    def port(self) -> int:
        port = self.options.port
        return port if port is not None else _PORTS.get(self.options.dialect, 8583)

    def connect(self) -> Any:
        return open_switch_client(self.options.host, self.port, dialect=self.options.dialect,
                                  framing=self.options.framing, tpdu=self.options.tpdu,
                                  timeout_s=self.options.timeout)

    # -- building ---------------------------------------------------------------

    def _pin(self, args: argparse.Namespace) -> str | None:
        if getattr(args, "no_pin", False) or not hasattr(args, "pin"):
            return None
        if args.pin == "-":
            return self.read_pin("PIN: ")
        if args.pin is not None:
            return str(args.pin)
        from_env = os.environ.get(PIN_ENV)
        if from_env:
            return from_env
        if args.command in _PIN_REQUIRED and sys.stdin.isatty():
            return self.read_pin("PIN: ")
        return None

    def build(self, args: argparse.Namespace) -> Sealed:
        """The sealed request of one parsed command (state saved first)."""
        device = self.device
        command = args.command
        fields: dict[str, str]
        if command in _NETWORK:
            fields = device.network(_NETWORK[command])
        elif command in ("purchase", "auth", "withdraw", "refund"):
            builder = {"purchase": device.purchase, "auth": device.authorization,
                       "withdraw": device.withdrawal, "refund": device.refund}[command]
            fields = builder(args.pan, args.amount, expiry=args.expiry)
        elif command == "balance":
            fields = device.balance_inquiry(args.pan, expiry=args.expiry, code=args.code)
        elif command == "transfer":
            fields = device.transfer(args.pan, args.amount, args.to_account,
                                     from_account=args.from_account, expiry=args.expiry)
        elif command == "complete":
            original = self._original(args.stan, "010")
            if original.get("pan_masked") != _mask(args.pan):
                raise UsageError(f"--pan is not the card of the authorization {args.stan}")
            fields = device.completion({**original, "2": args.pan}, args.amount)
        elif command == "reverse":
            original = self._original(args.stan, None)
            fields = device.reversal(original, advice=args.advice,
                                     actual_amount_minor=args.amount)
        else:  # pragma: no cover - argparse refuses other commands
            raise UsageError(f"unknown command {command}")
        sealed = device.seal_message(fields, pin=self._pin(args), mac=not self.options.no_mac)
        self._save(sealed)
        return sealed

    def _original(self, stan: str, mti_class: str | None) -> dict[str, str]:
        original = self.saved.original(stan)
        if original is None:
            raise UsageError(f"no request with STAN {stan} in the state file for this device")
        if mti_class is not None and original.get("t", "")[:3] != mti_class:
            raise UsageError(f"STAN {stan} was not an {mti_class}0 request")
        return original

    def _save(self, sealed: Sealed) -> None:
        self.saved.counter = self.device.counter
        self.saved.stan = self.device.last_stan
        if sealed.mti[:2] != "08":
            self.saved.remember(sealed.fields)
        self.state.save()

    # -- running ----------------------------------------------------------------

    async def run(self, client: SwitchClient, args: argparse.Namespace) -> int:
        """Build, send, print; returns this command's exit status."""
        try:
            sealed = self.build(args)
        except (UsageError, DeviceError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return self._record(EXIT_USAGE)
        try:
            response = await client.call(sealed)
        except SwitchClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return self._record(EXIT_NO_ANSWER)
        verdict = self.device.verify_response_mac(response.raw, sealed.ksn, response.fields)
        self.print_answer(sealed, response.fields, verdict)
        code = response.fields.get("39")
        return self._record(EXIT_APPROVED if code == "00" else EXIT_DECLINED)

    def _record(self, status: int) -> int:
        self.worst = max(self.worst, status)
        return status

    def print_answer(self, sealed: Sealed, fields: Mapping[str, str],
                     verdict: MacVerdict) -> None:
        code = fields.get("39")
        balances = _balances(fields)
        if self.options.json:
            document = {"request": masked_fields(sealed.fields), "ksn": sealed.ksn,
                        "response": masked_fields(fields), "rc": code,
                        "meaning": describe_response_code(code), "mac": verdict.value,
                        "balances": balances}
            print(json.dumps(document), file=self.out)
            return
        pin_note = " with PIN" if "52" in sealed.fields else ""
        mac_note = " MACed" if sealed.mac else ""
        print(f"> {sealed.mti} STAN {sealed.stan} sent{pin_note}{mac_note}"
              + (f" (KSN {sealed.ksn})" if sealed.ksn else ""), file=self.out)
        print("\n".join(format_message(fields, self.descs)), file=self.out)
        print(f"Response      {describe_response_code(code)}", file=self.out)
        for balance in balances:
            print(f"Balance       {balance['type']:<9} {balance['amount']} "
                  f"(currency {balance['currency']}, account type {balance['account_type']})",
                  file=self.out)
        print(f"MAC           {verdict.value}", file=self.out)
        self.out.flush()


def _mask(pan: str) -> str:
    from iso_switch.codec.masking import mask_pan

    return mask_pan(pan)


def _balances(fields: Mapping[str, str]) -> list[dict[str, str]]:
    if "54" not in fields:
        return []
    try:
        parsed = parse_de54(fields["54"])
    except SubfieldError:
        return []
    scale = Decimal(10) ** MINOR_DIGITS
    return [{"type": b.amount_type_name, "amount": f"{Decimal(b.amount_minor) / scale:.2f}",
             "currency": b.currency, "account_type": b.account_type} for b in parsed]


def _make_device(options: argparse.Namespace, counter: int = 0,
                 stan: int | None = None) -> TerminalDevice:
    common: dict[str, Any] = {
        "terminal_id": options.terminal, "merchant_id": options.merchant,
        "dialect": options.dialect, "ksn_prefix": options.ksn_prefix,
        "device_index": options.device, "counter": counter,
        "stan": None if stan is None or not 0 <= stan < STAN_MAX else stan + 1,
        "acquirer_id": options.acquirer_id,
    }
    if options.keys_dir:
        from iso_switch.security.keystore import KeyStore, resolve_master_key

        directory = Path(options.keys_dir)
        master = resolve_master_key(None, allow_demo=(directory / "master.kcv").exists())
        return TerminalDevice.from_key_store(KeyStore(directory, master), **common)
    bdk = DEMO_BDK_HEX
    if options.bdk_env:
        value = os.environ.get(options.bdk_env)
        if not value:
            raise UsageError(f"${options.bdk_env} is not set")
        bdk = value.strip()
    return TerminalDevice(bdk=bdk, **common)


# -- entry points -----------------------------------------------------------------


def _read_script(path: str) -> list[str]:
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        lines = Path(path).read_text("utf-8").splitlines()
    if len(lines) > SCRIPT_LINES_MAX:
        raise UsageError(f"a script holds at most {SCRIPT_LINES_MAX} lines")
    return [line.strip() for line in lines
            if line.strip() and not line.strip().startswith("#")]


def parse_line(parser: argparse.ArgumentParser, line: str) -> argparse.Namespace:
    """One script/prompt line; :class:`UsageError` instead of exiting.
    The error text names the problem, never the line (it may hold a PAN)."""
    try:
        words = shlex.split(line)
    except ValueError:
        raise UsageError("unbalanced quotes") from None
    try:
        return parser.parse_args(words)
    except argparse.ArgumentError as exc:
        raise UsageError(mask_free_text(str(exc))) from None
    except SystemExit:
        raise UsageError("invalid command (see --help)") from None


async def _run_one(session: Session, args: argparse.Namespace) -> int:
    try:
        async with session.connect() as client:
            return await session.run(client, args)
    except OSError as exc:
        print(f"error: cannot connect to {session.options.host}:{session.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return session._record(EXIT_NO_ANSWER)


async def _run_script(session: Session, lines: Sequence[str]) -> int:
    parser = build_line_parser()
    try:
        async with session.connect() as client:
            for number, line in enumerate(lines, start=1):
                try:
                    args = parse_line(parser, line)
                except UsageError as exc:
                    print(f"error: script line {number}: {exc}", file=sys.stderr)
                    session._record(EXIT_USAGE)
                    continue
                await session.run(client, args)
    except OSError as exc:
        print(f"error: cannot connect to {session.options.host}:{session.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return session._record(EXIT_NO_ANSWER)
    return session.worst


class Prompt(cmd.Cmd):
    """The interactive prompt: each line is one command, sent on its own
    connection (so an idle prompt never trips the switch's idle timeout)."""

    intro = "iso-switch-sim: type a command (e.g. echo, purchase --pan P --amount 1.00), " \
            "'help' or 'quit'."
    prompt = "sim> "

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.parser = build_line_parser()

    def default(self, line: str) -> None:
        try:
            args = parse_line(self.parser, line)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return
        trio.run(_run_one, self.session, args)

    def do_help(self, arg: str) -> None:
        """List the commands, or 'help COMMAND' for one."""
        if arg:
            with contextlib.suppress(SystemExit):  # argparse exits after --help
                self.parser.parse_args([arg, "--help"])
            return
        self.parser.print_help()

    def do_quit(self, arg: str) -> bool:
        """Leave the prompt."""
        return True

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:  # cmd's name for end of input
        print()
        return True

    def emptyline(self) -> bool:
        return False


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the simulator; answers are printed to ``out`` (standard output)."""
    parser = build_parser()
    options = parser.parse_args(argv)
    try:
        session = Session(options, out or sys.stdout)
        if options.command == "script":
            return trio.run(_run_script, session, _read_script(options.file))
        if options.command == "interactive":
            Prompt(session).cmdloop()
            return session.worst
        return trio.run(_run_one, session, options)
    except (UsageError, DeviceError, StateError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_NO_ANSWER


if __name__ == "__main__":
    sys.exit(main())
