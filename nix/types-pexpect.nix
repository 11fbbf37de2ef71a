# Type stubs for pexpect (typeshed), for the flake's `verifier` check and the dev shell:
# mypy --strict on verifier/, tests/ and tools/ (pyproject.toml) needs them, pexpect ships
# no py.typed, and nixpkgs has no types-pexpect package. The wheel is pure Python.
{
  lib,
  buildPythonPackage,
  fetchurl,
}:

buildPythonPackage rec {
  pname = "types-pexpect";
  version = "4.9.0.20260518";
  format = "wheel";

  # The wheel PyPI serves for this release (https://pypi.org/project/types-pexpect/), the
  # version the dev extra resolves to in tools/setup's .venv, so both run the same stubs.
  src = fetchurl {
    url = "https://files.pythonhosted.org/packages/01/11/17b1da645d5f2a12e4db83ae38dbb732fbac96fb3bd7416635c844f7d24e/types_pexpect-${version}-py3-none-any.whl";
    hash = "sha256-vyQi6CXk7+KcxKG3vcPDda6X2cMEbOayAYwQD7BJwmI=";
  };

  meta = {
    description = "Typing stubs for pexpect";
    homepage = "https://github.com/python/typeshed";
    license = lib.licenses.asl20;
  };
}
