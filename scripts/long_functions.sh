#!/usr/bin/env bash
# Lists the functions in agent/ and cli/ (*.cc) longer than N lines (default
# 80), longest first: "LINES FILE:LINE NAME". Lines are counted from the
# first line of the signature (a template line included) to the closing brace.
#   scripts/long_functions.sh [-n N] [--fail] [PATH...]
# PATH: files or directories to scan instead of agent/ and cli/.
# --fail: exit 1 if any function is listed (exit 0 otherwise; without it, 0).
# A function with a comment containing "long-function:" and the reason in
# the comment block right above it is listed with "(reason given)" and does
# not make --fail fail (issue 14: long only with a reason written next to it).
#
# A brace-matching scan, not a parser: comments, string, character and raw
# string literals and preprocessor lines are blanked first; a body is a
# brace block at namespace or class level whose head ends in ')' (plus
# const/noexcept/override/-> T...) or has a constructor initialiser list.
# Lambdas and local classes count as part of the function around them.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import os, re, sys

def usage(code):
    print("usage: scripts/long_functions.sh [-n N] [--fail] [PATH...]", file=sys.stderr)
    sys.exit(code)

limit, fail, paths = 80, False, []
args = sys.argv[1:]
while args:
    a = args.pop(0)
    if a == "-n" and args and args[0].isdigit():
        limit = int(args.pop(0))
    elif a == "--fail":
        fail = True
    elif a in ("-h", "--help"):
        usage(0)
    elif a.startswith("-"):
        usage(2)
    else:
        paths.append(a)
paths = paths or ["agent", "cli"]

def blank(text):
    """The text with comments, literals and preprocessor lines turned into
    spaces (newlines kept, so offsets and line numbers do not move)."""
    out, i, n = list(text), 0, len(text)
    def wipe(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "
    line_start = True
    while i < n:
        c = text[i]
        if line_start and c == "#":  # preprocessor line, with continuations
            j = i
            while j < n and not (text[j] == "\n" and text[j - 1] != "\\"):
                j += 1
            wipe(i, j); i = j; continue
        if c == "\n":
            line_start = True; i += 1; continue
        if not c.isspace():
            line_start = False
        if text.startswith("//", i):
            j = text.find("\n", i); j = n if j < 0 else j
            wipe(i, j); i = j; continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2); j = n if j < 0 else j + 2
            wipe(i, j); i = j; continue
        if c in "\"'":
            # The identifier or number just before: R"( raw strings, 60'000.
            k = i
            while k > 0 and (text[k - 1].isalnum() or text[k - 1] == "_"):
                k -= 1
            word = text[k:i]
            if c == "'" and word[:1].isdigit():
                i += 1; continue  # digit separator
            if c == '"' and word.endswith("R") and word in ("R", "u8R", "uR", "UR", "LR"):
                m = re.compile(r'"([^()\\\s]{0,16})\(').match(text, i)
                if m:
                    end = text.find(")" + m.group(1) + '"', m.end())
                    j = n if end < 0 else end + len(m.group(1)) + 2
                    wipe(i + 1, j - 1); i = j; continue
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            wipe(i + 1, min(j, n)); i = j + 1; continue
        i += 1
    return "".join(out)

QUALS = r"(?:\s|const\b|noexcept\b(?:\s*\([^()]*\))?|override\b|final\b|mutable\b|volatile\b|&)*"
FUNC_END = re.compile(r"\)" + QUALS + r"(?:->[^;{}]*)?$", re.S)
INIT_LIST = re.compile(r"\)" + QUALS + r":(?!:)", re.S)

def strip_prefix(head):
    head = head.strip()
    while True:
        m = re.match(r"(?:public|private|protected)\s*:(?!:)\s*", head)
        if m:
            head = head[m.end():]; continue
        if head.startswith("template"):
            j, depth = head.find("<"), 0
            for k in range(j, len(head)):
                depth += {"<": 1, ">": -1}.get(head[k], 0)
                if depth == 0:
                    head = head[k + 1:].lstrip(); break
            else:
                return head
            continue
        return head

def name_of(head):
    """The (qualified) name before the parameter list."""
    depth = 0
    for k, c in enumerate(head):
        if c == "(":
            if depth == 0:
                before = head[:k].rstrip()
                if re.search(r"\boperator\s*$", before) and re.match(r"\(\s*\)", head[k:]):
                    return re.sub(r"\s+", "", re.search(r"[\w:~]*operator\s*$", before).group(0)) + "()"
                m = re.search(r"((?:\w+\s*(?:<[^()]*>)?\s*::\s*)*(?:~?\w+|operator\s*\S+))\s*$", before)
                if m:
                    return re.sub(r"\s+", "", m.group(1))
                return "?"
            depth += 1
        elif c == ")":
            depth -= 1
    return "?"

def scan(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    src_lines = text.split("\n")
    clean = blank(text)
    found, i, n, head_start = [], 0, len(clean), 0
    transparent = []  # open namespace ("") and class ("Name::") scopes
    def close_block(i):
        depth = 0
        while i < n:
            if clean[i] == "{": depth += 1
            elif clean[i] == "}":
                depth -= 1
                if depth == 0: return i
            i += 1
        return n - 1
    while i < n:
        c = clean[i]
        if c in ";":
            head_start = i + 1
        elif c == "}":
            if transparent: transparent.pop()
            head_start = i + 1
        elif c == "{":
            raw = clean[head_start:i]
            head = strip_prefix(raw)
            if INIT_LIST.search(head) and re.search(r"[\w>]\s*$", head):
                i = close_block(i) + 1  # a member initialised with braces: a_{x}
                continue
            if re.match(r"(?:inline\s+)?namespace\b|extern\b", head):
                transparent.append("")
            elif re.match(r"(?:typedef\s+)?(?:class|struct|union)\b", head) and not FUNC_END.search(head):
                m = re.match(r"(?:typedef\s+)?(?:class|struct|union)\s+(?:\[\[[^\]]*\]\]\s*)?([\w:]+)", head)
                transparent.append(m.group(1) + "::" if m else "")
            else:
                end = close_block(i)
                if FUNC_END.search(head) or INIT_LIST.search(head):
                    first = head_start + len(raw) - len(raw.lstrip())
                    line = clean.count("\n", 0, first) + 1
                    last = clean.count("\n", 0, end) + 1
                    found.append((last - line + 1, path, line, "".join(transparent) + name_of(head)))
                i = end + 1
                head_start = i
                continue
            head_start = i + 1
        i += 1
    return found, src_lines

def reason_above(src_lines, line):
    k = line - 2  # 0-based index of the line above the signature
    while k >= 0 and src_lines[k].strip().startswith("//"):
        if "long-function:" in src_lines[k]:
            return True
        k -= 1
    return False

files = []
for p in paths:
    if os.path.isdir(p):
        for root, _, names in os.walk(p):
            files += [os.path.join(root, f) for f in names if f.endswith(".cc")]
    elif os.path.isfile(p):
        files.append(p)
    else:
        print(f"long_functions: no such file or directory: {p}", file=sys.stderr)
        sys.exit(2)

rows, unexplained = [], 0
for f in sorted(files):
    found, src_lines = scan(f)
    for length, path, line, name in found:
        if length > limit:
            ok = reason_above(src_lines, line)
            unexplained += not ok
            rows.append((length, path, line, name, ok))
for length, path, line, name, ok in sorted(rows, key=lambda r: (-r[0], r[1], r[2])):
    print(f"{length:5d} {path}:{line} {name}" + ("  (reason given)" if ok else ""))
sys.exit(1 if fail and unexplained else 0)
PY
