"""ISO 4217 alphabetic codes a wallet may hold.

A fixed list (active codes, no funds or precious-metal codes such as XAU) is enough: a typo
like "INRR" or "ABC" must be refused before it becomes a wallet's currency forever.

A well-formed code is not yet one a wallet may be opened in: the deployment's supported set
(`WALLET_CURRENCIES`, INR alone by default) decides, because the tier limits and transfer's
maximum amount are plain minor units, meant for INR (see `parse_currency_codes`).
"""

from __future__ import annotations

__all__ = ["DEFAULT_CURRENCY", "ISO_4217_CODES", "is_currency_code", "parse_currency_codes"]

DEFAULT_CURRENCY = "INR"

ISO_4217_CODES: frozenset[str] = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHF",
        "CLP",
        "CNY",
        "COP",
        "CRC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "UYU",
        "UZS",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
        "ZWL",
    ]
)


def is_currency_code(code: str) -> bool:
    return code in ISO_4217_CODES


def parse_currency_codes(text: str) -> frozenset[str]:
    """The currencies a deployment supports, from a comma-separated list such as "INR,USD".

    Every entry must be an upper-case ISO 4217 code and the default currency (INR, what a
    CreateWallet naming none opens) must be among them. Raises ValueError naming what is wrong.
    """
    codes = [part.strip() for part in text.split(",")]
    for code in codes:
        if not code:
            raise ValueError("must be a comma-separated list of currency codes, e.g. INR,USD")
        if code != code.upper() or not is_currency_code(code):
            raise ValueError(f"{code!r} is not an upper-case ISO 4217 currency code")
    if DEFAULT_CURRENCY not in codes:
        raise ValueError(
            f"must include {DEFAULT_CURRENCY}, the currency of a wallet opened without one"
        )
    return frozenset(codes)
