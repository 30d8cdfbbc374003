#!/usr/bin/env python3
"""Hand-written hostile policy modules, as WebAssembly text.

    gen.py core CASE > case.wat                      # the core module
    wasm-tools print case.wasm | gen.py patch CASE   # the component, edited (or as is)

Each CASE is a core module that implements the tenancy:policy world's canonical ABI by hand
(`info`, `evaluate`, `cabi_realloc`, `memory`) and attacks the host in a way a compiler for a
high-level language would not emit. scripts/build-policies.sh embeds the contract's WIT,
wraps each one into a component, and lets `patch` edit the component's text where the attack
lives at the component level (tests/data/policies/hostile/CASE.wasm).

  two-memories     two core modules with a 56 MiB memory each: under a 64 MiB limit one
                   by one, over it together
  function-flood   250,000 one-instruction functions (a compile-time bomb by count)
  liveness-bomb    one function whose 9,000 locals stay live across 40,000 blocks (a
                   compile-time bomb by shape: 370 KB, minutes and gigabytes to compile)
  contract-future  a correct policy built against tenancy:policy@9.0.0
"""
import sys

# info()'s record: name at 16 ("hostile", 7), version at 32 ("0.0.0", 5), no rules;
# evaluate()'s result: an empty list.
BASE = r'''
  (global $heap (mut i32) (i32.const 4096))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    global.get $heap
    local.get 2
    i32.add
    i32.const 1
    i32.sub
    i32.const 0
    local.get 2
    i32.sub
    i32.and
    local.tee $p
    local.get 3
    i32.add
    global.set $heap
    block
      loop
        global.get $heap
        memory.size
        i32.const 16
        i32.shl
        i32.le_u
        br_if 1
        i32.const 1
        memory.grow
        i32.const -1
        i32.eq
        if
          unreachable
        end
        br 0
      end
    end
    local.get $p)
  (data (memory 0) (i32.const 16) "hostile")
  (data (memory 0) (i32.const 32) "0.0.0")
  (data (memory 0) (i32.const 48) "\10\00\00\00\07\00\00\00\20\00\00\00\05\00\00\00\00\00\00\00\00\00\00\00")
  (func (export "info") (result i32) i32.const 48)
  (func (export "evaluate") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    {evaluate}
    i32.const 80)
'''

PAGES_56_MIB = 56 * 16


def module(memories, evaluate="", extra=""):
    return "(module\n" + memories + BASE.replace("{evaluate}", evaluate) + extra + ")\n"


def main(case):
    one = '  (memory (export "memory") 1)\n'
    if case == "two-memories":
        return module(f'  (memory (export "memory") {PAGES_56_MIB})\n')
    if case == "function-flood":
        body = "".join(f"  (func (result i32) i32.const 0)\n" for i in range(250_000))
        return module(one, extra=body)
    if case == "liveness-bomb":
        # Under the shape check's locals limit, so that only the compile budget stops it.
        n_locals, n_blocks = 9_000, 40_000
        lines = [f'  (func $bomb (export "bomb") (param $x i32) (result i64)',
                 f"    (local {' '.join(['i64'] * n_locals)})"]
        for i in range(1, n_locals + 1):
            lines.append(f"    i64.const {i}\n    local.set {i}")
        for _ in range(n_blocks):
            lines.append("    block\n      local.get 0\n      br_if 0\n    end")
        lines.append("    i64.const 0")
        for i in range(1, n_locals + 1):
            lines.append(f"    local.get {i}\n    i64.add")
        lines.append("  )")
        return module(one, extra="\n".join(lines) + "\n")
    if case == "contract-future":
        return module(one)
    sys.exit(f"unknown case {case!r}; see gen.py's docstring")


def patch(case, component):
    """Edit the component's text for the attacks that live at the component level."""
    if case == "two-memories":
        anchor = "  (core instance $main"
        second = (f"  (core module $second (memory {PAGES_56_MIB}) (data (i32.const 0) \"x\"))\n"
                  "  (core instance $second (instantiate $second))\n")
        assert anchor in component, "no main instance to put the second module before"
        return component.replace(anchor, second + anchor, 1)
    if case == "contract-future":
        assert "tenancy:policy/types@0.1.0" in component
        return component.replace("tenancy:policy/types@0.1.0", "tenancy:policy/types@9.0.0")
    return component


if __name__ == "__main__":
    mode, case = sys.argv[1], sys.argv[2]
    if mode == "core":
        sys.stdout.write(main(case))
    elif mode == "patch":
        sys.stdout.write(patch(case, sys.stdin.read()))
    else:
        sys.exit("usage: gen.py core|patch CASE")
