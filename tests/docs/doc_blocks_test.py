#!/usr/bin/env python3
"""Keeps the command blocks of README.md, docs/*.md and helm/aimesh/*.md
runnable (issue 19).

  tests/docs/doc_blocks_test.py BUILD_DIR     check every doc (runs --self-test first)
  tests/docs/doc_blocks_test.py --self-test   only the parser's own check

Every fenced ```sh / ```bash / ```shell / ```console block is either RUN or
SKIPPED, never silently ignored:

- A block is run (bash -e -o pipefail, in a scratch directory that links the
  repository's top-level entries and `build` -> BUILD_DIR, BUILD_DIR first on
  PATH, with a timeout) when every command in it is on the allow-list below:
  `--help` of meshctl / aimesh-agent / a script that handles --help,
  `meshctl version --client`, `aimesh-agent ... --check-config`, the unit
  test binary, promtool check/test, helm template/lint/show, and text filters.
  Nothing else is ever run, marker or not: that is what keeps this test from
  attaching BPF programs, starting the agent on a cgroup, touching
  /sys/fs/cgroup or /sys/fs/bpf, iptables/nft, the network or apt.
- A block that cannot run here says so on the line before its fence:
      <!-- doc-test: skip (needs a cluster) -->
  An unmarked block that is not on the allow-list fails the test.
- Every block, run or skipped, is checked: `bash -n`; no `$ ` prompt in a
  sh block (use ```console) and a console block has `$ ` commands (output
  alone is ```text); a line starting with a flag must follow a line ending
  in `\\` (a comment after the backslash ends the command); and every
  meshctl / aimesh-agent command line (continuations joined, after sudo,
  env assignments or `kubectl exec ... --`) names a real subcommand and only
  flags that its `--help` lists. $VAR, <PLACEHOLDER> and ALL-CAPS positionals
  are not checked.
- An unlabelled ``` block whose first line is a command (`$ ...`, meshctl,
  sudo, cmake, kubectl, scripts/..., build/...) fails: label it ```sh or
  ```console, or ```text if it is a synopsis or output.

Prints one line per block (FILE:LINE), exits 1 on any failure. Stdlib only.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DOC_GLOBS = ["README.md", "docs/*.md", "helm/aimesh/*.md"]
# Files left out (none: every doc's blocks are checked).
SKIP_FILES = set()
SHELL_INFOS = {"sh", "bash", "shell", "console"}
RUN_TIMEOUT_S = 60

MARKER_RE = re.compile(r"^\s*<!--\s*doc-test:\s*(.*?)\s*-->\s*$")
SKIP_RE = re.compile(r"^skip\s*\((.+)\)$")
FENCE_RE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")
# First words that make an unlabelled block a command block.
COMMAND_WORDS = {"meshctl", "aimesh-agent", "sudo", "cmake", "make", "kubectl", "helm", "docker",
                 "curl", "bpftool", "promtool", "python3", "git", "apt-get", "apt"}
CHECKED_PROGRAMS = {"meshctl", "aimesh-agent"}
OPERATORS = {"|", "||", "&", "&&", ";", ";;", "(", ")", "|&", "\n"}
REDIRECTS = {">", ">>", "<", "<<", "<<<", ">&", "<&", "&>", ">|"}
# Programs that only read their input and print (the tail of a pipeline).
# Not sed/awk (they can run commands and write files), nor sort/uniq/tee
# (they can write files).
TEXT_FILTERS = {"echo", "printf", "cat", "grep", "egrep", "head", "tail", "wc", "cut", "tr", "jq", "true"}
# Text that hides a command from the allow-list (substitutions, eval).
HIDDEN_COMMAND_RE = re.compile(r"`|\$\(|[<>]\(|(^|[\s;&|(])(eval|exec|source|\.)\s")


# ---- parsing -----------------------------------------------------------------

@dataclasses.dataclass
class Block:
    path: str          # repository-relative
    line: int          # 1-based line of the opening fence
    info: str          # the fence's language ("" when unlabelled)
    body: list[str]    # lines, the fence's indentation removed
    marker: str | None = None   # text of a `<!-- doc-test: ... -->` on the line before

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def parse_blocks(path: str, text: str) -> list[Block]:
    """Fenced code blocks (CommonMark-style: a closing fence is the same
    character, at least as long, nothing after it)."""
    lines = text.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m.group(1)), m.group(2), m.group(3).lower()
        close = re.compile(r"^\s*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        body = [l[indent:] if l[:indent].strip() == "" else l.lstrip() for l in lines[i + 1:j]]
        marker = None
        if i > 0:
            mm = MARKER_RE.match(lines[i - 1])
            if mm:
                marker = mm.group(1)
        blocks.append(Block(path, i + 1, info, body, marker))
        i = j + 1
    return blocks


def commands_of(block: Block) -> list[tuple[int, str]]:
    """(line offset in the body, logical command line) of a shell block:
    continuation lines joined; in a console block only `$ ` lines and their
    continuations (the rest is output)."""
    out, cur, start = [], None, 0
    for n, raw in enumerate(block.body):
        line = raw.rstrip("\n")
        if cur is None:
            if block.info == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            start, cur = n, ""
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        out.append((start, cur))
        cur = None
    if cur is not None:
        out.append((start, cur))
    return out


def script_of(block: Block) -> str:
    if block.info == "console":
        return "\n".join(c for _, c in commands_of(block)) + "\n"
    return "\n".join(block.body) + "\n"


def tokenize(command: str) -> list[str]:
    """Shell words and operators of one logical line; comments dropped
    (`#` starts one only at the start of a word, as in bash, not inside
    quotes; shlex's own comment handling knows neither)."""
    lex = shlex.shlex(strip_comment(command), posix=True, punctuation_chars=";&|()<>")
    lex.whitespace_split = True
    lex.commenters = ""
    return list(lex)


def strip_comment(command: str) -> str:
    quote, prev = None, " "
    for i, ch in enumerate(command):
        if quote:
            if ch == quote and (quote == "'" or prev != "\\"):
                quote = None
        elif ch in "'\"" and prev != "\\":
            quote = ch
        elif ch == "#" and prev in " \t;&|(":
            return command[:i]
        prev = ch
    return command


REDIRECT = "\0>"  # prefix of a redirection's target in a simple command


def simple_commands(tokens: list[str]) -> list[list[str]]:
    """Split at operators; a redirection becomes one REDIRECT+target word
    (a `2` before `>` stays a word: harmless for what is checked here)."""
    cmds, cur, redirect = [], [], False
    for t in tokens:
        if redirect:
            redirect = False
            cur.append(REDIRECT + t)
            continue
        if t in OPERATORS:
            if cur:
                cmds.append(cur)
            cur = []
        elif t in REDIRECTS:
            redirect = True
        else:
            cur.append(t)
    if cur:
        cmds.append(cur)
    return cmds


def program_index(cmd: list[str]) -> int | None:
    """Index of the program a simple command runs: after sudo / env
    assignments / timeout N, or after `--` (kubectl exec/debug ... -- CMD)."""
    i = 0
    while i < len(cmd):
        t = cmd[i]
        if t == "sudo" or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", t):
            i += 1
        elif t == "timeout" and i + 1 < len(cmd):
            i += 2
        elif t == "env":
            i += 1
        else:
            break
    if i >= len(cmd):
        return None
    if os.path.basename(cmd[i]) == "kubectl" and "--" in cmd[i:]:
        j = cmd.index("--", i) + 1
        return j if j < len(cmd) else None
    return i


def is_placeholder(t: str) -> bool:
    return "$" in t or "<" in t or "{" in t or "…" in t or "..." in t or (t.isupper() and len(t) > 1)


# ---- what the binaries accept -----------------------------------------------

@dataclasses.dataclass
class Cli:
    flags: set[str]                   # "--long" and "-s" forms
    value_flags: set[str]             # those that take a value
    subcommands: dict[str, "Cli"]


def parse_help(text: str) -> Cli:
    """CLI11 help: option lines are indented two spaces and start with '-'."""
    flags, value_flags, subs, section = set(), set(), {}, ""
    for line in text.split("\n"):
        if re.match(r"^\S.*:\s*$", line):
            section = line.strip().rstrip(":")
            continue
        if section == "Subcommands":
            m = re.match(r"^  (\S+)", line)
            if m:
                subs[m.group(1)] = None
            continue
        m = re.match(r"^  (-\S.*?)(?:\s{2,}|$)", line)
        if not m or section != "Options":
            continue
        head = m.group(1).split()
        names = [n for n in head[0].split(",") if n.startswith("-")]
        flags.update(names)
        # "--socket TEXT=..." takes a value; "--each" / "--cleanup" do not.
        rest = [w for w in head[1:] if not w.endswith(":") and not w.startswith("-")]
        if rest and re.match(r"^[A-Z]", rest[0]):
            value_flags.update(names)
    return Cli(flags, value_flags, subs)


def load_cli(binary: str, with_subcommands: bool) -> Cli:
    cli = parse_help(run_help([binary, "--help"]))
    if with_subcommands:
        for name in list(cli.subcommands):
            cli.subcommands[name] = parse_help(run_help([binary, name, "--help"]))
    return cli


def run_help(argv: list[str]) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def check_invocation(prog: str, args: list[str], clis: dict[str, Cli]) -> list[str]:
    """Problems with one meshctl / aimesh-agent command line."""
    top = clis[prog]
    problems, sub, sub_name, skip_value = [], None, "", False
    for t in args:
        if t.startswith(REDIRECT):
            continue
        if skip_value:
            skip_value = False
            continue
        if t == "--":
            break
        if is_placeholder(t):
            continue
        if t.startswith("-") and len(t) > 1 and not re.match(r"^-[0-9.]", t):
            name = t.split("=", 1)[0]
            known = top.flags | (sub.flags if sub else set())
            if name not in known:
                where = f"{prog} {sub_name}" if sub else prog
                problems.append(f"`{where}` has no flag {name} (see `{where} --help`)")
            elif sub is None and name in top.value_flags and "=" not in t:
                skip_value = True  # a global option's value is not the subcommand
            continue
        if top.subcommands and sub is None:
            if t not in top.subcommands:
                problems.append(f"`{prog}` has no subcommand `{t}` (it has: {', '.join(top.subcommands)})")
                return problems
            sub_name, sub = t, top.subcommands[t]
    if top.subcommands and sub is None and not ({"-h", "--help"} & set(args)):
        problems.append(f"`{prog} {' '.join(args)}` names no subcommand")
    return problems


# ---- what may run here ------------------------------------------------------

def script_handles_help(path: str) -> bool:
    full = os.path.join(REPO, path)
    if not (path.startswith("scripts/") and os.path.isfile(full)):
        return False
    with open(full, encoding="utf-8", errors="replace") as f:
        src = f.read()
    return bool(re.search(r"-h\|--help\)|\"--help\"\)", src))


def unsafe_reason(cmd: list[str]) -> str | None:
    """None when this simple command is on the allow-list; else why not."""
    if any(t.startswith("/sys/") or "/sys/fs/" in t for t in cmd):
        return "touches /sys"
    if any("://" in t or t.startswith("oci:") for t in cmd):
        return "names a URL (network)"
    if any(re.fullmatch(r"[;&|()<>]+", t) for t in cmd):
        return "shell syntax this test does not follow"
    if cmd[0] == "sudo":
        return "runs sudo"
    i = program_index(cmd)
    if i is None:
        return None  # only assignments
    prog, args = cmd[i], cmd[i + 1:]
    for t in cmd:
        target = t[len(REDIRECT):]
        if t.startswith(REDIRECT) and not (target in ("/dev/null", "1", "2") or
                                           (not target.startswith("/") and ".." not in target)):
            return f"redirects to {target}"
    args = [t for t in args if not t.startswith(REDIRECT)]
    base = os.path.basename(prog)
    wants_help = "--help" in args or "-h" in args
    if base in CHECKED_PROGRAMS:
        if any("$" in a for a in args):
            return f"{base} with a $variable"
        if "--cleanup" in args:
            return "aimesh-agent --cleanup"
        if wants_help:
            return None
        if base == "meshctl" and args[:1] == ["version"] and "--client" in args:
            return None
        if base == "aimesh-agent" and "--check-config" in args:
            return None
        return f"{base} {' '.join(args[:1])} needs a node or an agent"
    if base == "aimesh_unit_tests":
        return None  # the unit tier: no root, no kernel objects, no traffic
    if prog.startswith("scripts/") and wants_help and script_handles_help(prog):
        return None
    if base == "promtool" and args[:1] and args[0] in ("check", "test"):
        return None
    if base == "helm" and args[:1] and args[0] in ("template", "lint", "show") and "--validate" not in args:
        return None
    if base in TEXT_FILTERS:
        return None
    return f"`{base}` is not on the run allow-list"


# ---- checking a block --------------------------------------------------------

@dataclasses.dataclass
class Result:
    block: Block
    verdict: str            # "run", "skip", "text" (not a command block)
    problems: list[str]
    checked: int = 0        # meshctl / aimesh-agent command lines checked
    note: str = ""


def command_line_numbers(block: Block) -> set[int]:
    """Body line numbers that are commands (all of a sh block; in a console
    block the `$ ` lines and their continuations)."""
    if block.info != "console":
        return set(range(len(block.body)))
    out, cont = set(), False
    for n, line in enumerate(block.body):
        if cont or line.startswith("$ "):
            out.add(n)
            cont = line.endswith("\\")
    return out


def lint_lines(block: Block) -> list[str]:
    problems = []
    body = block.body
    commands = command_line_numbers(block)
    for n, line in enumerate(body):
        if n not in commands:
            continue
        at = f"line {block.line + 1 + n}"
        if re.search(r"\\[ \t]+$", line):
            problems.append(f"{at}: spaces after the trailing backslash: the command ends here")
        if re.search(r"\\\s+#", line):
            problems.append(f"{at}: a comment after `\\` ends the command; put it on its own line")
        if block.info != "console" and line.startswith("$ "):
            problems.append(f"{at}: `$ ` prompt in a ```{block.info} block: use ```console")
        stripped = line.lstrip()
        if n > 0 and re.match(r"^--?[A-Za-z]", stripped):
            prev = next((body[k] for k in range(n - 1, -1, -1) if body[k].strip()), "")
            if not prev.rstrip().endswith("\\"):
                problems.append(f"{at}: starts with a flag but the line before has no trailing `\\`")
    return problems


def check_block(block: Block, clis: dict[str, Cli] | None) -> Result:
    if block.info not in SHELL_INFOS:
        if block.marker is not None:
            return Result(block, "text", [f"doc-test marker before a ```{block.info} block: only "
                                          "sh/bash/shell/console blocks are tested"])
        first = next((l for l in block.body if l.strip()), "").strip()
        word = first.split()[0] if first else ""
        looks = first.startswith("$ ") or word in COMMAND_WORDS or \
            re.match(r"^(\./)?(scripts|build[\w-]*)/\S", word)
        if block.info == "" and looks:
            return Result(block, "text", [f"unlabelled block holds commands (`{first[:40]}`): label it "
                                          "```sh (```console with `$ ` prompts), or ```text if it is output"])
        return Result(block, "text", [])
    problems = lint_lines(block)
    cmds = commands_of(block)
    if block.info == "console" and not cmds:
        problems.append("```console block with no `$ ` command: output alone is ```text")
    r = subprocess.run(["bash", "-n"], input=script_of(block), capture_output=True, text=True)
    if r.returncode != 0:
        problems.append("bash -n: " + r.stderr.strip().replace("bash: ", "").replace("\n", "; "))
    unsafe, checked = [], 0
    for n, line in cmds:
        try:
            tokens = tokenize(line)
        except ValueError as e:
            problems.append(f"line {block.line + 1 + n}: cannot split `{line.strip()}`: {e}")
            continue
        if HIDDEN_COMMAND_RE.search(strip_comment(line)):
            unsafe.append("a command substitution or eval")
        for cmd in simple_commands(tokens):
            why = unsafe_reason(cmd)
            if why:
                unsafe.append(why)
            i = program_index(cmd)
            if i is None or os.path.basename(cmd[i]) not in CHECKED_PROGRAMS or clis is None:
                continue
            checked += 1
            for p in check_invocation(os.path.basename(cmd[i]), cmd[i + 1:], clis):
                problems.append(f"line {block.line + 1 + n}: {p}")
    marker = block.marker
    if marker is not None:
        m = SKIP_RE.match(marker)
        if not m:
            problems.append(f"bad marker `<!-- doc-test: {marker} -->`: write `<!-- doc-test: skip (why) -->`")
            return Result(block, "skip", problems, checked)
        return Result(block, "skip", problems, checked, note=m.group(1))
    if unsafe:
        problems.append(f"not run ({unsafe[0]}) and not marked: if it cannot run here, put "
                        "`<!-- doc-test: skip (why) -->` on the line before the fence")
        return Result(block, "skip", problems, checked)
    return Result(block, "run", problems, checked)


def scratch_dir(build_dir: str) -> str:
    """A directory whose entries are links to the repository's top level,
    with `build` -> BUILD_DIR, so repo-relative paths in docs work and
    whatever a block writes lands here."""
    d = tempfile.mkdtemp(prefix="aimesh-doc-")
    for name in os.listdir(REPO):
        if name in (".git", "build") or name.startswith("build-"):
            continue
        os.symlink(os.path.join(REPO, name), os.path.join(d, name))
    os.symlink(os.path.abspath(build_dir), os.path.join(d, "build"))
    return d


def run_block(block: Block, build_dir: str) -> list[str]:
    d = scratch_dir(build_dir)
    env = dict(os.environ)
    env["PATH"] = os.path.abspath(build_dir) + os.pathsep + env.get("PATH", "")
    env["AIMESH_SOCKET"] = os.path.join(d, "no-agent.sock")  # never a real agent
    try:
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script_of(block)], cwd=d, env=env,
                           capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return [f"did not finish in {RUN_TIMEOUT_S} s"]
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip() or "(no output)").split("\n")[-5:]
        return [f"exited {r.returncode}: " + " | ".join(tail)]
    return []


# ---- self-test -----------------------------------------------------------------

SAMPLE = """\
# sample

```sh
meshctl --help
meshctl -o json --socket /tmp/x.sock status --help
```

1. In a list:

   <!-- doc-test: skip (needs a running agent) -->
   ```sh
   meshctl endpoints llama -n ml     # a comment
   meshctl --socket "$SOCK" latency <SERVICE> \\
     --namespace ml
   kubectl -n kube-system exec POD -- meshctl top --clients --interval 2
   ```

<!-- doc-test: skip (attaches BPF) -->
```bash
sudo aimesh-agent --state-file s.yaml \\
  --cgroup /sys/fs/cgroup/x --pin-dir /p   # comment after the last line is fine
meshctl endpoints --wide
meshctl servics
aimesh-agent --cgroup /x \\  # a comment here ends the command
  --pin-dir /p
```

```sh
aimesh-agent --cleanup
```

```
meshctl status
```

```console
$ meshctl version --client
meshctl 0.1.0
```

```text
NAME   STATE
```
"""

SAMPLE_HELP = {
    "meshctl": Cli({"-h", "--help", "--socket", "-o", "--output", "--timeout"}, {"--socket", "-o", "--output",
                   "--timeout"}, {
        "status": Cli({"-h", "--help"}, set(), {}),
        "endpoints": Cli({"-h", "--help", "-n", "--namespace"}, {"-n", "--namespace"}, {}),
        "latency": Cli({"-h", "--help", "-n", "--namespace"}, {"-n", "--namespace"}, {}),
        "top": Cli({"-h", "--help", "--interval", "--clients"}, {"--interval"}, {}),
        "version": Cli({"-h", "--help", "--client"}, set(), {}),
    }),
    "aimesh-agent": Cli({"-h", "--help", "--state-file", "--cgroup", "--pin-dir", "--cleanup"},
                        {"--state-file", "--cgroup", "--pin-dir"}, {}),
}


def self_test() -> list[str]:
    """The parser on SAMPLE, with fake help texts (no binaries needed)."""
    fails = []

    def expect(cond, what):
        if not cond:
            fails.append(what)

    cli = parse_help("Usage: x\n\nOptions:\n  -h,--help       Print\n  --socket TEXT=/a  sock\n"
                     "  --each                  list\n  -n,--namespace TEXT  ns\n\nSubcommands:\n"
                     "  status      agent state\n")
    expect(cli.flags == {"-h", "--help", "--socket", "--each", "-n", "--namespace"}, f"parse_help flags {cli.flags}")
    expect(cli.value_flags == {"--socket", "-n", "--namespace"}, f"parse_help values {cli.value_flags}")
    expect(list(cli.subcommands) == ["status"], f"parse_help subcommands {cli.subcommands}")

    blocks = parse_blocks("sample.md", SAMPLE)
    expect([b.line for b in blocks] == [3, 11, 19, 28, 32, 36, 41], f"fence lines {[b.line for b in blocks]}")
    res = [check_block(b, SAMPLE_HELP) for b in blocks]
    by = {r.block.line: r for r in res}

    expect(by[3].verdict == "run" and not by[3].problems, f"help block runs: {by[3].problems}")
    expect(by[11].verdict == "skip" and by[11].note == "needs a running agent" and not by[11].problems
           and by[11].checked == 3, f"indented skip block: {by[11]}")
    expect(commands_of(blocks[1])[1][1].split() == ["meshctl", "--socket", '"$SOCK"', "latency", "<SERVICE>",
                                                   "--namespace", "ml"], "continuation join")
    p19 = " ".join(by[19].problems)
    expect("no flag --wide" in p19, "unknown flag caught")
    expect("no subcommand `servics`" in p19, "unknown subcommand caught")
    expect("comment after `\\`" in p19 and "starts with a flag" in p19, "comment after backslash caught")
    expect(by[19].checked == 4, f"block 19 checked {by[19].checked}")
    expect(by[28].verdict == "skip" and "not marked" in " ".join(by[28].problems), "unsafe unmarked fails")
    expect("unlabelled block holds commands" in " ".join(by[32].problems), "unlabelled command block caught")
    expect(by[36].verdict == "run" and not by[36].problems, f"console block: {by[36].problems}")
    expect(by[41].verdict == "text" and not by[41].problems, "text block ignored")
    expect(unsafe_reason(["curl", "http://127.0.0.1/"]) is not None, "curl never runs")
    expect(unsafe_reason(["helm", "template", "x", "oci://r/x"]) is not None, "no chart from the network")
    expect(unsafe_reason(["meshctl", "status"]) is not None, "meshctl status never runs")
    expect(unsafe_reason(["aimesh-agent", "--state-file", "x"]) is not None, "the agent never runs")
    expect(simple_commands(tokenize("meshctl --help 2>&1 | grep -q status >/dev/null")) ==
           [["meshctl", "--help", "2", REDIRECT + "1"], ["grep", "-q", "status", REDIRECT + "/dev/null"]],
           "redirections")
    expect(unsafe_reason(["grep", "x", REDIRECT + "/dev/null"]) is None, "a redirect to /dev/null runs")
    expect(unsafe_reason(["echo", "x", REDIRECT + "/etc/passwd"]) is not None, "a redirect out of the scratch dir")
    for hidden in ("cat <(rm -rf x)", "echo $(rm x)", "echo `rm x`", "eval rm x", "meshctl --help; . ./x"):
        b = Block("h.md", 1, "sh", [hidden])
        expect(check_block(b, SAMPLE_HELP).verdict == "skip", f"`{hidden}` must not run")
    expect(strip_comment("echo 'a # b' # c") == "echo 'a # b' ", "comment inside quotes kept")
    return fails


# ---- main ------------------------------------------------------------------------

def doc_files() -> list[str]:
    out = []
    for g in DOC_GLOBS:
        out += sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, g)))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    fails = self_test()
    for f in fails:
        print(f"FAIL self-test: {f}")
    if argv[1] == "--self-test":
        print("self-test: " + ("FAILED" if fails else "ok"))
        return 1 if fails else 0
    build_dir = argv[1]
    clis = {}
    for prog, subs in (("meshctl", True), ("aimesh-agent", False)):
        binary = os.path.join(build_dir, prog)
        if not os.access(binary, os.X_OK):
            print(f"FAIL {binary} is not built (the doc test checks command lines against it)")
            return 1
        try:
            clis[prog] = load_cli(binary, subs)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"FAIL reading {prog}'s --help: {e}")
            return 1

    counts = {"run": 0, "skip": 0, "checked": 0, "failed": 0}
    for path in doc_files():
        if path in SKIP_FILES:
            print(f"SKIP {path} (TODO issue 19: not checked yet)")
            continue
        with open(os.path.join(REPO, path), encoding="utf-8") as f:
            blocks = parse_blocks(path, f.read())
        for b in blocks:
            res = check_block(b, clis)
            if res.verdict == "text" and not res.problems:
                continue
            if res.verdict == "run" and not res.problems:
                res.problems += run_block(b, build_dir)
            counts["checked"] += res.checked
            if res.verdict in ("run", "skip"):
                counts[res.verdict] += 1
            label = {"run": "ran", "skip": "skipped", "text": "text"}[res.verdict]
            detail = f" ({res.note})" if res.note else ""
            detail += f", {res.checked} meshctl/aimesh-agent line(s) checked" if res.checked else ""
            if res.problems:
                counts["failed"] += 1
                print(f"FAIL {b.where} [{b.info or 'unlabelled'}] {label}{detail}")
                for p in res.problems:
                    print(f"       {p}")
            else:
                print(f"ok   {b.where} [{b.info}] {label}{detail}")
    print(f"\n{counts['run']} block(s) run, {counts['skip']} skipped, {counts['checked']} "
          f"meshctl/aimesh-agent command line(s) checked, {counts['failed']} failed"
          + (f"; self-test: {len(fails)} failed" if fails else ""))
    return 1 if counts["failed"] or fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
