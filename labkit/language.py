"""Which edition of the course a learner reads (English or 中文), chosen once from the environment. A leaf module:
errors.py reads it too, so it imports nothing of labkit.

LABKIT_LANG wins (`zh-CN`, `zh`, `en`); otherwise the locale (LC_ALL, LC_MESSAGES, LANG: `zh_CN.UTF-8` → zh-CN);
otherwise English. The lab opens that edition's lesson 00 with JupyterLab's own interface in that language, and
labkit's most common messages (`text(en, zh)`) read in it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

EDITIONS = ("en", "zh-CN")
LESSON_00 = "00_welcome.ipynb"


def edition(env: Mapping[str, str] | None = None) -> str:
    """'zh-CN' or 'en' for this environment (see the module's docstring for the order)."""
    env = os.environ if env is None else env
    chosen = env.get("LABKIT_LANG", "").strip()
    if chosen:
        if chosen.lower().replace("_", "-") in ("zh", "zh-cn", "zh-hans", "cn"):
            return "zh-CN"
        if chosen.lower().startswith("en"):
            return "en"
        raise ValueError(f"LABKIT_LANG={chosen!r} names no edition of the course. Fix: set LABKIT_LANG to one of: "
                         f"{', '.join(EDITIONS)} (or unset it to follow the locale)")
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):  # POSIX order: the first one set decides
        value = env.get(name, "")
        if value:
            return "zh-CN" if value.lower().startswith("zh") else "en"
    return "en"


def lesson_00(which: str) -> str:
    """Lesson 00 of an edition, relative to notebooks/ (the Chinese lessons live in notebooks/zh-CN/)."""
    return LESSON_00 if which == "en" else f"{which}/{LESSON_00}"


def jupyter_settings(which: str) -> dict:
    """JupyterLab defaults for the course's lab: the interface's language, and no popup asking about news."""
    return {
        "@jupyterlab/translation-extension:plugin": {"locale": "zh_CN" if which == "zh-CN" else "en"},
        "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    }


def text(en: str, zh: str, env: Mapping[str, str] | None = None) -> str:
    """A message in the learner's edition: labkit's most common messages are written in both languages."""
    try:
        return zh if edition(env) == "zh-CN" else en
    except ValueError:  # a bad LABKIT_LANG must not hide the message it was asked to show
        return en
