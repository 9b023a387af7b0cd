from __future__ import annotations

import subprocess
import sys

import facesocial.security as sec


def test_exports_resolve() -> None:
    assert sorted(sec.__all__) == sorted(sec._WHERE)
    for name in sec.__all__:
        assert getattr(sec, name) is not None


def test_ratelimit_import_is_light() -> None:
    code = ("import sys, facesocial.security.ratelimit; "
            "print('sqlalchemy' in sys.modules, 'facesocial.db.models' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
