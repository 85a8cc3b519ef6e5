"""List what a RecBole .pth checkpoint's pickle references, WITHOUT executing it (stdlib only).

    python3 benchmarks/recbole/inspect_ckpt.py benchmarks/recbole/out/checkpoints/SASRec-*.pth

Reads the zip archive torch.save writes, then walks data.pkl opcode by opcode with
pickletools.genops on a symbolic stack: globals become ("GLOBAL", "module.qualname") markers,
calls become ("CALL", func, args) tuples, persistent ids (tensor storages) become ("PID", ...).
Nothing is imported and no find_class/REDUCE is ever run. Prints the archive listing, every
global the pickle references (with counts), the top-level dict keys and the keys of the pickled
Config's state.
"""

from __future__ import annotations

import collections
import pickletools
import sys
import zipfile


class Obj:
    """An inert stand-in for an object the pickle would build."""

    def __init__(self, func, args):
        self.func, self.args, self.state, self.items = func, args, None, []

    def __repr__(self):
        return f"Obj({self.func})"


def walk(data: bytes):
    stack: list = []
    marks: list[int] = []
    memo: dict = {}
    globals_seen: collections.Counter = collections.Counter()

    def pop_mark():
        i = marks.pop()
        items = stack[i:]
        del stack[i:]
        return items

    for op, arg, _pos in pickletools.genops(data):
        n = op.name
        if n in ("PROTO", "FRAME", "STOP"):
            continue
        if n == "MARK":
            marks.append(len(stack))
        elif n in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
                   "BINSTRING", "SHORT_BINSTRING", "BININT", "BININT1", "BININT2", "LONG1",
                   "LONG4", "INT", "LONG", "BINFLOAT", "FLOAT", "BINBYTES", "SHORT_BINBYTES",
                   "BINBYTES8", "BYTEARRAY8"):
            stack.append(arg)
        elif n == "NONE":
            stack.append(None)
        elif n in ("NEWTRUE", "NEWFALSE"):
            stack.append(n == "NEWTRUE")
        elif n == "EMPTY_DICT":
            stack.append({})
        elif n == "EMPTY_LIST":
            stack.append([])
        elif n == "EMPTY_TUPLE":
            stack.append(())
        elif n == "EMPTY_SET":
            stack.append(set())
        elif n in ("DICT", "LIST", "TUPLE", "FROZENSET"):
            items = pop_mark()
            if n == "DICT":
                stack.append(dict(zip(items[::2], items[1::2])))
            else:
                stack.append({"LIST": list, "TUPLE": tuple, "FROZENSET": frozenset}[n](items))
        elif n in ("TUPLE1", "TUPLE2", "TUPLE3"):
            k = int(n[-1])
            t = tuple(stack[-k:])
            del stack[-k:]
            stack.append(t)
        elif n in ("MEMOIZE",):
            memo[len(memo)] = stack[-1]
        elif n in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = stack[-1]
        elif n in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo[arg])
        elif n in ("GLOBAL", "STACK_GLOBAL"):
            if n == "GLOBAL":
                mod, name = arg.split(" ", 1)
            else:
                name = stack.pop()
                mod = stack.pop()
            g = f"{mod}.{name}"
            globals_seen[g] += 1
            stack.append(("GLOBAL", g))
        elif n in ("REDUCE", "NEWOBJ"):
            args = stack.pop()
            func = stack.pop()
            stack.append(Obj(func[1] if isinstance(func, tuple) else func, args))
        elif n == "NEWOBJ_EX":
            kw = stack.pop()
            args = stack.pop()
            cls = stack.pop()
            stack.append(Obj(cls[1], (args, kw)))
        elif n == "BUILD":
            state = stack.pop()
            stack[-1].state = state
        elif n in ("SETITEM", "SETITEMS"):
            items = [stack.pop(), stack.pop()][::-1] if n == "SETITEM" else pop_mark()
            target = stack[-1]
            pairs = list(zip(items[::2], items[1::2]))
            if isinstance(target, dict):
                target.update(pairs)
            else:  # e.g. OrderedDict built by REDUCE
                target.items.extend(pairs)
        elif n in ("APPEND", "APPENDS", "ADDITEMS"):
            items = [stack.pop()] if n == "APPEND" else pop_mark()
            target = stack[-1]
            if isinstance(target, list):
                target.extend(items)
            elif isinstance(target, set):
                target.update(items)
            else:
                target.items.extend(items)
        elif n in ("BINPERSID", "PERSID"):
            pid = stack.pop() if n == "BINPERSID" else arg
            stack.append(("PID", pid))
        elif n == "POP":
            stack.pop()
        elif n == "POP_MARK":
            pop_mark()
        elif n == "DUP":
            stack.append(stack[-1])
        else:
            raise NotImplementedError(n)
    return stack[-1], globals_seen


def main() -> None:
    path = sys.argv[1]
    z = zipfile.ZipFile(path)
    names = z.namelist()
    print("archive:", len(names), "entries")
    for info in z.infolist()[:6]:
        print(f"  {info.filename}  {info.file_size} B")
    print(f"  ... {sum(1 for x in names if '/data/' in x)} storage files under <prefix>/data/")
    pkl = next(x for x in names if x.endswith("/data.pkl"))
    top, seen = walk(z.read(pkl))
    print("\nglobals referenced by data.pkl (module.qualname: count):")
    for g, c in sorted(seen.items()):
        print(f"  {g}: {c}")
    print("\ntop-level:", type(top).__name__, "keys:", list(top) if isinstance(top, dict) else "-")
    for k, v in top.items():
        desc = v if isinstance(v, (int, float, str, type(None))) else type(v).__name__
        if isinstance(v, Obj):
            desc = f"{v.func} (state: {type(v.state).__name__}, {len(v.items)} items)"
        print(f"  {k!r}: {desc}")
    cfg = top.get("config")
    if isinstance(cfg, Obj) and isinstance(cfg.state, dict):
        print("\nConfig state keys:", list(cfg.state))
        fcd = cfg.state.get("final_config_dict")
        if isinstance(fcd, dict):
            for k in ("model", "dataset", "MAX_ITEM_LIST_LENGTH", "hidden_size", "n_layers",
                      "n_heads", "inner_size", "embedding_size", "num_layers", "loss_type",
                      "hidden_act", "layer_norm_eps", "MODEL_TYPE", "device"):
                if k in fcd:
                    print(f"  final_config_dict[{k!r}] = {fcd[k]}")
    sd = top.get("state_dict")
    if isinstance(sd, Obj):
        print(f"\nstate_dict: {sd.func} with {len(sd.items)} entries:")
        for k, v in sd.items:
            shape = v.args[2] if isinstance(v, Obj) and len(v.args) > 2 else "?"
            print(f"  {k}: {v.func if isinstance(v, Obj) else v} {shape}")


if __name__ == "__main__":
    main()
