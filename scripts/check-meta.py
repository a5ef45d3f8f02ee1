#!/usr/bin/env python3
"""Check a META.json against the PGXN Meta Spec 1.0.0 (pgxn.org/spec/).

    python3 scripts/check-meta.py [META.json] [--version X.Y]

Neither Debian nor npm packages a PGXN validator, so this script checks what
the spec requires: the required keys and their types, SemVer versions,
license names, provides entries, prereq phases, relationships and version
ranges, release_status, resources, tags, no_index and meta-spec.  Unknown keys
must be x_ or X_ custom keys, as the spec says.  With --version it also
checks that the distribution and every extension it provides carry the
SemVer form of the extension version X.Y (PGXN versions are SemVer, the
control file's are not).  Exits 1 and prints every problem found.
"""
import json
import re
import sys

SEMVER = r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"
SEMVER_RE = re.compile("^" + SEMVER + "$")
# a version range: "0", a version, or comma-separated operator clauses
CLAUSE = r"((==|!=|<=|>=|<|>)\s*)?(" + SEMVER + r"|0)"
RANGE_RE = re.compile(r"^" + CLAUSE + r"(\s*,\s*" + CLAUSE + r")*$")
TERM_RE = re.compile(r"^[^\s/\\:]{2,}$")        # names: 2+ chars, no space, / \ :
LICENSES = {
    "agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd",
    "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1",
    "lgpl_3_0", "mit", "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5",
    "postgresql", "qpl_1_0", "ssleay", "sun", "zlib", "open_source",
    "restricted", "unrestricted", "unknown",
}
PHASES = {"configure", "build", "test", "runtime", "develop"}
RELATIONS = {"requires", "recommends", "suggests", "conflicts"}
STATUSES = {"stable", "testing", "unstable"}
REQUIRED = ["name", "version", "abstract", "maintainer", "license", "provides", "meta-spec"]
OPTIONAL = ["description", "generated_by", "tags", "no_index", "prereqs",
            "release_status", "resources"]

problems = []


def bad(path, msg):
    problems.append("%s: %s" % (path, msg))


def custom(key):
    return key.startswith("x_") or key.startswith("X_")


def nonempty_string(path, v):
    if not isinstance(v, str) or not v.strip():
        bad(path, "must be a non-empty string")
        return False
    return True


def uri(path, v):
    if nonempty_string(path, v) and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", v):
        bad(path, "must be a URI")


def semver(path, v):
    if not isinstance(v, str) or not SEMVER_RE.match(v):
        bad(path, "must be a Semantic Version (x.y.z), not %r" % (v,))


def only_keys(path, obj, allowed):
    for k in obj:
        if k not in allowed and not custom(k):
            bad(path, "unknown key %r" % k)


def check_license(v):
    if isinstance(v, str):
        if v not in LICENSES:
            bad("license", "unknown license %r" % v)
    elif isinstance(v, list) and v:
        for i, item in enumerate(v):
            if item not in LICENSES:
                bad("license[%d]" % i, "unknown license %r" % (item,))
    elif isinstance(v, dict) and v:
        for k, url in v.items():
            uri("license.%s" % k, url)
    else:
        bad("license", "must be a license name, a list of them or an object of name to URL")


def check_provides(v):
    if not isinstance(v, dict) or not v:
        bad("provides", "must be an object with at least one extension")
        return
    for ext, spec in v.items():
        p = "provides.%s" % ext
        if not TERM_RE.match(ext):
            bad(p, "extension name must be 2+ characters without spaces, / \\ or :")
        if not isinstance(spec, dict):
            bad(p, "must be an object")
            continue
        only_keys(p, spec, {"file", "version", "abstract", "docfile"})
        for k in ("file", "version"):
            if k not in spec:
                bad(p, "missing required key %r" % k)
        if "file" in spec:
            nonempty_string(p + ".file", spec["file"])
        if "version" in spec:
            semver(p + ".version", spec["version"])
        for k in ("abstract", "docfile"):
            if k in spec:
                nonempty_string(p + "." + k, spec[k])


def check_prereqs(v):
    if not isinstance(v, dict):
        bad("prereqs", "must be an object")
        return
    for phase, rels in v.items():
        p = "prereqs.%s" % phase
        if phase not in PHASES and not custom(phase):
            bad(p, "unknown phase (one of %s)" % ", ".join(sorted(PHASES)))
        if not isinstance(rels, dict):
            bad(p, "must be an object")
            continue
        for rel, reqs in rels.items():
            q = "%s.%s" % (p, rel)
            if rel not in RELATIONS and not custom(rel):
                bad(q, "unknown relationship (one of %s)" % ", ".join(sorted(RELATIONS)))
            if not isinstance(reqs, dict):
                bad(q, "must be an object of name to version range")
                continue
            for name, rng in reqs.items():
                r = "%s.%s" % (q, name)
                if not TERM_RE.match(name) and name != "PL/pgSQL":
                    bad(r, "prerequisite name must be 2+ characters without spaces")
                if rng == 0:
                    continue
                if not isinstance(rng, str) or not RANGE_RE.match(rng):
                    bad(r, "must be 0 or a version range such as '1.2.0' or '>= 15.0.0, < 16.0.0', not %r" % (rng,))


def check_resources(v):
    if not isinstance(v, dict):
        bad("resources", "must be an object")
        return
    only_keys("resources", v, {"homepage", "bugtracker", "repository"})
    if "homepage" in v:
        uri("resources.homepage", v["homepage"])
    if "bugtracker" in v:
        b = v["bugtracker"]
        if not isinstance(b, dict) or not b:
            bad("resources.bugtracker", "must be an object with web and/or mailto")
        else:
            only_keys("resources.bugtracker", b, {"web", "mailto"})
            if "web" in b:
                uri("resources.bugtracker.web", b["web"])
            if "mailto" in b and (not isinstance(b["mailto"], str) or "@" not in b["mailto"]):
                bad("resources.bugtracker.mailto", "must be an email address")
    if "repository" in v:
        r = v["repository"]
        if not isinstance(r, dict) or not r:
            bad("resources.repository", "must be an object with url, web and type")
        else:
            only_keys("resources.repository", r, {"url", "web", "type"})
            for k in ("url", "web"):
                if k in r:
                    uri("resources.repository." + k, r[k])
            if "url" in r and "type" not in r:
                bad("resources.repository", "type is required with url")
            if "type" in r and (not isinstance(r["type"], str) or not re.match(r"^[a-z]+$", r["type"])):
                bad("resources.repository.type", "must be a lower-case word such as git")


def check(meta, version):
    if not isinstance(meta, dict):
        bad("META.json", "must hold a JSON object")
        return
    for k in REQUIRED:
        if k not in meta:
            bad(k, "required key missing")
    only_keys("META.json", meta, set(REQUIRED) | set(OPTIONAL))
    if "name" in meta and (not isinstance(meta["name"], str) or not TERM_RE.match(meta["name"])):
        bad("name", "must be 2+ characters without spaces, / \\ or :")
    if "version" in meta:
        semver("version", meta["version"])
    if "abstract" in meta:
        nonempty_string("abstract", meta["abstract"])
    if "maintainer" in meta:
        m = meta["maintainer"]
        if isinstance(m, list):
            if not m:
                bad("maintainer", "must not be empty")
            for i, item in enumerate(m):
                nonempty_string("maintainer[%d]" % i, item)
        else:
            nonempty_string("maintainer", m)
    if "license" in meta:
        check_license(meta["license"])
    if "provides" in meta:
        check_provides(meta["provides"])
    if "meta-spec" in meta:
        ms = meta["meta-spec"]
        if not isinstance(ms, dict) or ms.get("version") != "1.0.0":
            bad("meta-spec", "must be an object with version \"1.0.0\"")
        else:
            only_keys("meta-spec", ms, {"version", "url"})
            if "url" in ms:
                uri("meta-spec.url", ms["url"])
    for k in ("description", "generated_by"):
        if k in meta:
            nonempty_string(k, meta[k])
    if "tags" in meta:
        t = meta["tags"]
        if not isinstance(t, list) or not t:
            bad("tags", "must be a non-empty list")
        else:
            for i, tag in enumerate(t):
                if not isinstance(tag, str) or not 1 <= len(tag) <= 255 or re.search(r"[/\\\x00-\x1f]", tag):
                    bad("tags[%d]" % i, "must be 1 to 255 characters without / \\ or control characters")
    if "no_index" in meta:
        n = meta["no_index"]
        if not isinstance(n, dict):
            bad("no_index", "must be an object")
        else:
            only_keys("no_index", n, {"file", "directory"})
            for k, lst in n.items():
                if isinstance(lst, str):
                    lst = [lst]
                if not isinstance(lst, list) or not all(isinstance(x, str) and x for x in lst):
                    bad("no_index." + k, "must be a path or a list of paths")
    if "prereqs" in meta:
        check_prereqs(meta["prereqs"])
    if "release_status" in meta and meta["release_status"] not in STATUSES:
        bad("release_status", "must be one of %s" % ", ".join(sorted(STATUSES)))
    if "resources" in meta:
        check_resources(meta["resources"])

    if version is not None:
        want = version if version.count(".") >= 2 else version + ".0"
        if meta.get("version") != want:
            bad("version", "is %r; extension version %s makes it %r" % (meta.get("version"), version, want))
        for ext, spec in (meta.get("provides") or {}).items():
            if isinstance(spec, dict) and spec.get("version") != want:
                bad("provides.%s.version" % ext, "is %r, not %r" % (spec.get("version"), want))


def main(argv):
    path, version = "META.json", None
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--version" and args:
            version = args.pop(0)
        else:
            path = a
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        print("%s: cannot read: %s" % (path, e), file=sys.stderr)
        return 1
    check(meta, version)
    for p in problems:
        print("%s: %s" % (path, p), file=sys.stderr)
    if problems:
        return 1
    print("%s: valid PGXN Meta Spec 1.0.0 (%s %s)" % (path, meta["name"], meta["version"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
