"""``iso-switch accounts | cards | terminals | merchants | issuer | journal |
blacklist``: reference data administration on the store under ``--data-dir``.

PANs and PINs never go on the command line (every user can read argv with
``ps``): ``cards create`` reads them from environment variables or prompts
without echo; ``cards import`` reads PANs from a file (the format of
:mod:`iso_switch.admin.cards`, through :func:`iso_switch.admin.import_cards`)
and its one initial PIN like ``cards create``. Output shows masked PANs only.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from iso_switch.cli.ledger_cmd import (
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    LIST_LIMIT_DEFAULT,
    _add_keys_arguments,
    add_data_dir,
    open_hsm,
)
from iso_switch.codec.masking import mask_pan

if TYPE_CHECKING:
    from iso_switch.config import IssuerConfig

PAN_ENV = "ISO_SWITCH_CARD_PAN"
PIN_ENV = "ISO_SWITCH_CARD_PIN"
#: The name a remote issuer's row gets in the ledger's issuer table.
REMOTE_ISSUER_NAME = "remote issuer"


# What argparse.add_subparsers returns (not subscriptable at run time).
_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(subparsers: _Subparsers) -> None:
    """The admin command groups, each declared by a function of its own."""
    for register_group in (_register_accounts, _register_cards, _register_terminals,
                           _register_merchants, _register_issuer, _register_journal,
                           _register_blacklist):
        register_group(subparsers)


def _group(subparsers: _Subparsers, name: str, help_text: str) -> _Subparsers:
    """A command group (``accounts``, ``cards``...) whose actions follow."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)


def _action(sub: _Subparsers, name: str, help_text: str, func: object) -> argparse.ArgumentParser:
    """One action of a group, with the data directory every action takes."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    add_data_dir(parser)
    parser.set_defaults(func=func)
    return parser


def _register_accounts(subparsers: _Subparsers) -> None:
    accounts = _group(subparsers, "accounts", "list and create ledger accounts")
    _action(accounts, "list", "list accounts with ledger and available balances", _accounts_list)
    create = _action(accounts, "create", "create an account (opening balance from the "
                     "operator's equity account)", _accounts_create)
    create.add_argument("number", help="account number (e.g. 6222020000000072)")
    create.add_argument("--kind", default="cardholder",
                        choices=["cardholder", "settlement", "clearing", "equity"],
                        help="cardholder accounts cannot go below zero (default cardholder)")
    create.add_argument("--currency", type=int, default=156, help="ISO 4217 numeric (156)")
    create.add_argument("--opening-minor", type=int, default=0,
                        help="opening balance in minor units (default 0)")
    close = _action(accounts, "close", "close an account (it refuses postings)", _accounts_close)
    close.add_argument("number")


def _register_cards(subparsers: _Subparsers) -> None:
    cards = _group(subparsers, "cards",
                   "list and create cards, change their state, reset PIN tries")
    _action(cards, "list", "list cards (PANs masked)", _cards_list)
    card_create = _action(
        cards, "create", f"create a card: PAN and PIN from ${PAN_ENV} / ${PIN_ENV} or prompted "
        "without echo; only a keyed hash of the PAN and PIN verification data are stored",
        _cards_create)
    card_create.add_argument("--account", required=True, help="the card's account number")
    card_create.add_argument("--expiry", required=True, help="YYMM")
    card_create.add_argument("--state", default="active",
                             choices=["active", "lost", "stolen", "blocked"])
    _add_keys_arguments(card_create)
    state = _action(cards, "state", "set a card's state", _cards_state)
    state.add_argument("card_id", type=int, help="card id from 'cards list'")
    state.add_argument("state", choices=["active", "lost", "stolen", "blocked"])
    reset = _action(cards, "reset-pin", "reset the PIN-try counter and unblock the PIN",
                    _cards_reset_pin)
    reset.add_argument("card_id", type=int, help="card id from 'cards list'")
    _register_cards_import(_action(cards, "import", CARDS_IMPORT_HELP, _cards_import))


def _register_terminals(subparsers: _Subparsers) -> None:
    terminals = _group(subparsers, "terminals", "list and create terminals and their profiles")
    _action(terminals, "list", "list terminals with their profiles", _terminals_list)
    terminal_create = _action(terminals, "create", "create or update a terminal",
                              _terminals_create)
    terminal_create.add_argument("id", help="DE41, 8 characters")
    terminal_create.add_argument("--merchant", required=True, help="DE42 merchant id")
    terminal_create.add_argument("--no-mac", action="store_true",
                                 help="MACs optional (default: required on 01xx/02xx/04xx)")
    terminal_create.add_argument("--codes", default="00,01,20,30,31,40",
                                 help="allowed processing codes (default all)")
    refunds = terminal_create.add_mutually_exclusive_group()
    refunds.add_argument("--refunds-per-day-minor", type=_positive_minor, metavar="MINOR",
                         help="allow refunds, at most MINOR (minor units) per business day "
                         "(default: no refunds)")
    refunds.add_argument("--refunds-uncapped", action="store_true",
                         help="allow refunds without a daily cap (default: no refunds)")


def _positive_minor(text: str) -> int:
    """A daily refund cap: a whole number of minor units, at least 1 (a
    terminal that may refund nothing is one without refunds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a whole number of minor units") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1 (leave refunds off instead)")
    return value


def _register_merchants(subparsers: _Subparsers) -> None:
    merchants = _group(subparsers, "merchants", "list and create merchants")
    _action(merchants, "list", "list merchants and their accounts", _merchants_list)
    merchant_create = _action(merchants, "create", "create or update a merchant",
                              _merchants_create)
    merchant_create.add_argument("id", help="DE42, 15 characters")
    merchant_create.add_argument("--name", default="")
    merchant_create.add_argument("--settlement", required=True, help="settlement account")
    merchant_create.add_argument("--cash", required=True, help="cash clearing account")


def _register_issuer(subparsers: _Subparsers) -> None:
    issuer = _group(subparsers, "issuer",
                    "mark an issuer up or down (down answers 91), list issuers")
    _add_config(_action(issuer, "list", "list issuers and BIN routes (with --config, the "
                        "configured remote issuers too)", _issuer_list))
    for name in ("up", "down"):
        parser = _action(issuer, name, f"mark an issuer {name}: the ledger's own, or with "
                         "--config a remote issuer of the configuration ([[issuers]])",
                         _issuer_set)
        parser.add_argument("issuer_id", nargs="?", default="onus",
                            help="issuer id (default onus)")
        parser.set_defaults(available=name == "up")
        _add_config(parser)


def _add_config(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` as ``serve`` takes it: its ``data_dir`` is used
    unless ``--data-dir`` is given, and its remote issuers are known."""
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="the switch's TOML configuration")
    parser.set_defaults(data_dir=None)


def _register_journal(subparsers: _Subparsers) -> None:
    journal = subparsers.add_parser(
        "journal", help="show the latest decisions (PANs masked)",
        description="The decision journal, newest first: key, response code, state, amount.")
    add_data_dir(journal)
    journal.add_argument("--limit", type=int, default=LIST_LIMIT_DEFAULT)
    journal.set_defaults(func=_journal)


def _register_blacklist(subparsers: _Subparsers) -> None:
    blacklist = _group(subparsers, "blacklist", "block a PAN, account, terminal or merchant (05)")
    _action(blacklist, "list", "list entries", _blacklist_list)
    for name in ("add", "remove"):
        parser = _action(blacklist, name, f"{name} an entry; a PAN is read from ${PAN_ENV} "
                         "or prompted", _blacklist_change)
        parser.add_argument("kind", choices=["pan", "account", "terminal", "merchant"])
        parser.add_argument("value", nargs="?", default="", help="not for PANs")
        parser.add_argument("--reason", default="")
        _add_keys_arguments(parser)  # a PAN is hashed under the key store's PAN hash key
        parser.set_defaults(add=name == "add")


CARDS_IMPORT_HELP = (
    "create cards in bulk from a JSON Lines file, in one audited transaction; every card "
    f"gets the same initial PIN, read from ${PIN_ENV} or prompted without echo"
)
CARDS_IMPORT_EPILOG = """\
FILE holds one JSON object per line, one card each (blank lines skipped):

  {"pan": "4761738000000006", "expiry": "3012", "account": "6222028800000000",
   "state": "active", "opening_minor": 100000000000, "limit_txn_minor": 500000,
   "limit_day_minor": 100000000000000, "limit_day_count": 1000000000}

pan, expiry (YYMM) and account are required. account is created (cardholder,
the switch's currency) when absent, with opening_minor moved from the
operator's equity account; an existing account is used as it is. state is
active (default), lost, stolen or blocked. The limit_* keys default to the
switch's (5000.00 per transaction, 20000.00 and 20 debits per business day).

The file carries no PIN (a "pin" key is refused): the switch's HSM turns the
one initial PIN into PIN verification data and the PIN is stored nowhere.
The file holds full PANs: keep it readable by its owner only and delete it
after the import. A card whose PAN is on file already is left unchanged, so
importing a file twice changes nothing; a bad line (named by number, never by
content) imports nothing. Each card created is in the audit log as
card.import.
"""


def _register_cards_import(parser: argparse.ArgumentParser) -> None:
    # Raw, so the example keeps its lines: the description is wrapped here.
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = textwrap.fill(CARDS_IMPORT_HELP, width=79)
    parser.epilog = CARDS_IMPORT_EPILOG
    parser.add_argument("file", metavar="FILE", help="the card file ('-': standard input)")
    _add_keys_arguments(parser)


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from iso_switch.processor import open_store

    return open_store(Path(args.data_dir))


def _pan_hash_key(args: argparse.Namespace, store) -> bytes:  # type: ignore[no-untyped-def]
    """The key store's PAN hash key, checked against the one the ledger
    records, so a card or blacklist entry is never hashed under another."""
    from iso_switch.processor import check_pan_hash_kcv
    from iso_switch.security.demo import pan_hash_key

    key, kcv = pan_hash_key(open_hsm(args).key_store)
    check_pan_hash_kcv(store, kcv)
    return key


def _now() -> datetime:
    return datetime.now(UTC)


def _audit(store, action: str, target: str, before: dict[str, object] | None,  # type: ignore[no-untyped-def]
           after: dict[str, object] | None) -> None:
    """Record an administrative action in the caller's write transaction."""
    from iso_switch.ledger.audit import os_user

    store.append_audit(os_user(), action, target, before, after, _now())


def _secret(env: str, prompt: str) -> str:
    value = os.environ.get(env)
    return value if value is not None else getpass.getpass(prompt)


def _accounts_list(args: argparse.Namespace) -> int:
    print(f"{'id':>4}  {'number':<20} {'kind':<11} {'ccy':>3} {'ledger':>16} {'available':>16}"
          "  closed")
    for a in _open(args).list_accounts():
        print(f"{a.id:>4}  {a.number:<20} {a.kind:<11} {a.currency:>3} "
              f"{a.ledger_balance_minor / 100:>16,.2f} {a.available_balance_minor / 100:>16,.2f}"
              f"  {'yes' if a.closed else ''}")
    return 0


def _accounts_create(args: argparse.Namespace) -> int:
    from iso_switch.ledger import AccountKind
    from iso_switch.processor.seed import EQUITY_ACCOUNT

    store, now = _open(args), _now()
    with store.write():
        if store.account_by_number(args.number) is not None:
            print("error: the account exists")
            return 1
        account = store.create_account(args.number, args.currency, AccountKind(args.kind), now)
        if args.opening_minor:
            equity = store.account_by_number(f"EQUITY-{args.currency}") or None
            equity_id = equity.id if equity else store.create_account(
                f"EQUITY-{args.currency}" if args.currency != 156 else EQUITY_ACCOUNT,
                args.currency, AccountKind.EQUITY, now)
            store.transfer(equity_id, account, args.opening_minor, args.currency,
                           "opening balance", now)
        _audit(store, "account.create", args.number, None,
               {"kind": args.kind, "currency": args.currency,
                "opening_minor": args.opening_minor})
    print(f"account {args.number} created (id {account})")
    return 0


def _accounts_close(args: argparse.Namespace) -> int:
    store = _open(args)
    with store.write():
        account = store.account_by_number(args.number)
        if account is None:
            print("error: no such account")
            return 1
        store.set_account_closed(account.id, True)
        _audit(store, "account.close", args.number, {"closed": account.closed},
               {"closed": True})
    print(f"account {args.number} closed")
    return 0


def _cards_list(args: argparse.Namespace) -> int:
    store = _open(args)
    print(f"{'id':>4}  {'pan':<20} {'expiry':<6} {'state':<8} {'account':<20} pin")
    for c in store.list_cards():
        account = store.get_account(c.account_id).number
        pin = "blocked" if c.pin_blocked else f"{c.pin_tries} wrong"
        print(f"{c.id:>4}  {c.pan_masked:<20} {c.expiry:<6} {c.state:<8} {account:<20} {pin}")
    return 0


def _cards_create(args: argparse.Namespace) -> int:
    from iso_switch.issuer import pan_valid
    from iso_switch.processor import ProcessorConfig
    from iso_switch.processor.seed import add_card

    pan = _secret(PAN_ENV, "PAN: ").strip()
    if not (pan.isdigit() and pan_valid(pan)):
        print("error: the PAN fails its length or Luhn check")
        return 1
    pin = _secret(PIN_ENV, "PIN: ").strip()
    if not (pin.isdigit() and 4 <= len(pin) <= 12):
        print("error: a PIN is 4 to 12 digits")
        return 1
    if not (len(args.expiry) == 4 and args.expiry.isdigit()):
        print("error: expiry is YYMM")
        return 1
    store = _open(args)
    hsm = open_hsm(args)
    config = ProcessorConfig(pan_hash_key=_pan_hash_key(args, store))
    with store.write():
        account = store.account_by_number(args.account)
        if account is None:
            print("error: no such account")
            return 1
        card_id = add_card(store, hsm, config, pan=pan, pin=pin,
                           expiry=args.expiry, state=args.state, account_id=account.id,
                           now=_now())
        _audit(store, "card.create", mask_pan(pan), None,
               {"card_id": card_id, "account": args.account, "expiry": args.expiry,
                "state": args.state})
    print(f"card {card_id} created")
    return 0


def _cards_import(args: argparse.Namespace) -> int:
    from iso_switch.admin import CardImportError, import_cards, parse_card_lines

    try:
        lines = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}")
        return 1
    with lines:
        if args.file != "-" and os.fstat(lines.fileno()).st_mode & 0o077:
            print(f"warning: {args.file} holds PANs and others may read it (chmod 600 it, "
                  "and delete it after the import)", file=sys.stderr)
        pin = _secret(PIN_ENV, "initial PIN for every card: ").strip()
        try:
            report = import_cards(Path(args.data_dir), open_hsm(args), parse_card_lines(lines),
                                  pin=pin)
        except CardImportError as exc:
            print(f"error: {exc}; nothing imported")
            return 1
        except UnicodeDecodeError:
            print(f"error: {args.file} is not UTF-8 text; nothing imported")
            return 1
    print(f"cards imported: {report.created} created, {report.existing} already on file")
    return 0


def _cards_state(args: argparse.Namespace) -> int:
    store = _open(args)
    with store.write():
        card = store.get_card(args.card_id)
        if card is None:
            print("error: no such card")
            return 1
        store.set_card_state(args.card_id, args.state)
        _audit(store, "card.state", card.pan_masked, {"state": card.state},
               {"state": args.state})
    print(f"card {args.card_id} is {args.state}")
    return 0


def _cards_reset_pin(args: argparse.Namespace) -> int:
    store = _open(args)
    with store.write():
        card = store.get_card(args.card_id)
        if card is None:
            print("error: no such card")
            return 1
        store.set_pin_tries(args.card_id, 0, False)
        _audit(store, "card.pin_reset", card.pan_masked,
               {"pin_tries": card.pin_tries, "pin_blocked": card.pin_blocked},
               {"pin_tries": 0, "pin_blocked": False})
    print(f"card {args.card_id}: PIN tries reset")
    return 0


def _terminals_list(args: argparse.Namespace) -> int:
    for t in sorted(_open(args).load_terminals().values(), key=lambda t: t.id):
        mac = "MAC required" if t.mac_required else "MAC optional"
        print(f"{t.id:<10} {t.merchant_id:<16} {mac:<13} codes {','.join(sorted(t.allowed_codes))}"
              f"  {_refunds(t)}")
    return 0


def _refunds(terminal) -> str:  # type: ignore[no-untyped-def]
    if not terminal.refunds_allowed:
        return "refunds no"
    if terminal.refund_day_minor is None:
        return "refunds uncapped"
    return f"refunds {terminal.refund_day_minor}/day"


def _profile(terminal) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {"merchant": terminal.merchant_id, "mac_required": terminal.mac_required,
            "codes": sorted(terminal.allowed_codes),
            "refunds_allowed": terminal.refunds_allowed,
            "refund_day_minor": terminal.refund_day_minor}


def _terminals_create(args: argparse.Namespace) -> int:
    from iso_switch.ledger.records import TerminalRow

    store = _open(args)
    codes = frozenset(c.strip() for c in args.codes.split(",") if c.strip())
    with store.write():
        if args.merchant not in store.load_merchants():
            print("error: no such merchant")
            return 1
        old = store.load_terminals().get(args.id)
        allowed = args.refunds_uncapped or args.refunds_per_day_minor is not None
        new = TerminalRow(args.id, args.merchant, not args.no_mac, codes,
                          refunds_allowed=allowed, refund_day_minor=args.refunds_per_day_minor)
        store.upsert_terminal(new)
        _audit(store, "terminal.save", args.id, None if old is None else _profile(old),
               _profile(new))
    print(f"terminal {args.id} saved")
    return 0


def _merchants_list(args: argparse.Namespace) -> int:
    store = _open(args)
    for m in sorted(store.load_merchants().values(), key=lambda m: m.id):
        settlement = store.get_account(m.settlement_account_id).number
        cash = store.get_account(m.cash_account_id).number
        print(f"{m.id:<16} {m.name:<20} settlement {settlement}  cash {cash}")
    return 0


def _merchants_create(args: argparse.Namespace) -> int:
    from iso_switch.ledger.records import MerchantRow

    store = _open(args)
    with store.write():
        settlement = store.account_by_number(args.settlement)
        cash = store.account_by_number(args.cash)
        if settlement is None or cash is None:
            print("error: no such account")
            return 1
        old = store.load_merchants().get(args.id)
        store.upsert_merchant(MerchantRow(args.id, args.name or args.id, settlement.id, cash.id))
        _audit(store, "merchant.save", args.id,
               None if old is None else {"name": old.name},
               {"name": args.name or args.id, "settlement": args.settlement,
                "cash": args.cash})
    print(f"merchant {args.id} saved")
    return 0


def _configured(args: argparse.Namespace) -> tuple[str, tuple[IssuerConfig, ...]]:
    """The data directory and remote issuers of ``--config`` (none without
    it); :class:`ConfigError` when the file does not load."""
    from iso_switch.config import load_config

    default = os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)
    if args.config is None:
        return args.data_dir or default, ()
    config = load_config(args.config, {"data_dir": args.data_dir})
    return config.data_dir, config.issuers


def _issuer_list(args: argparse.Namespace) -> int:
    from iso_switch.config import ConfigError

    try:
        args.data_dir, remote = _configured(args)
    except ConfigError as error:
        print(f"error: {error}")
        return 1
    store = _open(args)
    routes = store.load_routes()
    issuers = store.load_issuers()
    for issuer in issuers.values():
        bins = ", ".join(sorted(p for p, i in routes.items() if i == issuer.id))
        print(f"{issuer.id:<8} {'up' if issuer.available else 'DOWN':<5} {issuer.name:<20} "
              f"BINs {bins}")
    for entry in remote:
        if entry.id not in issuers:  # never marked down: up
            print(f"{entry.id:<8} {'up':<5} {REMOTE_ISSUER_NAME:<20} BINs {', '.join(entry.bins)}")
    return 0


def _issuer_set(args: argparse.Namespace) -> int:
    """Marks an issuer of the ledger up or down; a configured remote issuer
    gets its row in the ledger's issuer table on first use, so the state
    outlives restarts and is shared by every process on that ledger."""
    from iso_switch.config import ConfigError
    from iso_switch.ledger.rows import IssuerRow

    try:
        args.data_dir, remote = _configured(args)
    except ConfigError as error:
        print(f"error: {error}")
        return 1
    store = _open(args)
    with store.write():
        found = store.set_issuer_available(args.issuer_id, args.available)
        if not found and args.issuer_id in {entry.id for entry in remote}:
            store.upsert_issuer(IssuerRow(args.issuer_id, REMOTE_ISSUER_NAME, args.available))
            found = True
        if found:
            _audit(store, "issuer.up" if args.available else "issuer.down", args.issuer_id,
                   None, {"available": args.available})
    if not found:
        print("error: no such issuer" + ("" if remote else " (a remote issuer needs --config)"))
        return 1
    print(f"issuer {args.issuer_id} is {'up' if args.available else 'down'}")
    return 0


def _journal(args: argparse.Namespace) -> int:
    print(f"{'seq':>6}  {'created (UTC)':<27} {'mti':<4} {'terminal':<9} {'stan':<6} "
          f"{'pan':<20} {'code':<6} {'amount':>14} rc {'state'}")
    for t in _open(args).journal(args.limit):
        print(f"{t.seq:>6}  {t.created_at:<27} {t.mti:<4} {t.terminal:<9} {t.stan:<6} "
              f"{t.pan_masked:<20} {t.code:<6} {t.amount_minor / 100:>14,.2f} {t.rc} {t.state}")
    return 0


def _blacklist_list(args: argparse.Namespace) -> int:
    for kind, value, reason in _open(args).list_blacklist():
        shown = "(keyed PAN hash)" if kind == "pan" else value
        print(f"{kind:<9} {shown:<24} {reason}")
    return 0


def _blacklist_change(args: argparse.Namespace) -> int:
    from iso_switch.issuer import pan_hash

    value = shown = args.value
    store = _open(args)
    if args.kind == "pan":
        pan = _secret(PAN_ENV, "PAN: ").strip()
        value, shown = pan_hash(_pan_hash_key(args, store), pan).hex(), mask_pan(pan)
    if not value:
        print("error: give a value")
        return 1
    with store.write():
        if args.add:
            store.add_blacklist(args.kind, value, args.reason)
        elif not store.remove_blacklist(args.kind, value):
            print("error: not on the blacklist")
            return 1
        _audit(store, "blacklist.add" if args.add else "blacklist.remove",
               f"{args.kind}:{shown}", None, {"reason": args.reason} if args.add else None)
    print(f"blacklist {args.kind}: {'added' if args.add else 'removed'}")
    return 0
