"""The words the bundled tiny model's conversations are made of, in two parts.

TRAINING feeds the build (scripts/tiny_model_data.py); HELD_OUT only the
held-out requests that scripts/evaluate_tiny_model.py measures: tool names,
parameter names, request phrasings, subjects and values the model never saw.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Words:
    """One side of the split: everything a conversation is made of."""

    # (verb, noun, kind of value it acts on); "pair" kinds take two values.
    actions: tuple
    # Parameter names for each kind of value.
    parameters: dict
    requests: tuple  # "{verb}" and "{value}"
    pair_requests: tuple  # "{verb}", "{first}" and "{second}"
    questions: tuple  # "{s}"
    greetings: tuple
    subjects: tuple
    values: dict  # kind -> callable(rng) -> str
    mcp_servers: tuple  # MCP tools are named mcp__<server>__<tool>


def _path(stems, exts, dirs):
    def make(rng):
        name = f"{rng.choice(stems)}.{rng.choice(exts)}"
        return name if rng.random() < 0.3 else f"{rng.choice(dirs)}/{name}"
    return make


def _dir(dirs, subs):
    return lambda rng: rng.choice(dirs) if rng.random() < 0.5 else f"{rng.choice(dirs)}/{rng.choice(subs)}"


def _url(hosts, pages):
    return lambda rng: f"https://{rng.choice(hosts)}/{rng.choice(pages)}"


def _quoted(words):
    return lambda rng: '"' + " ".join(rng.sample(words, rng.randrange(1, 4))) + '"'


# Many more verbs, each acting on one kind of value: with this many, what makes a request
# an action is its shape (a verb, a value, an offered tool that does it), not its verb.
MORE_TRAINING_VERBS = {
    ("file", "path"): "annotate audit backup beautify bump cat chmod close compile convert decode decrypt diff dump "
                      "encode encrypt export fix hash import lock minify migrate normalize patch preview refactor "
                      "render reset restore rewrite sanitize sign sort split stage strip test touch translate trim "
                      "truncate unlock unzip update validate verify wipe zip",
    ("folder", "dir"): "organize tidy prune purge flatten mount unmount chown walk traverse snapshot explore measure",
    ("command", "command"): "rerun repeat schedule trace debug spawn stop dispatch submit perform retry profile",
    ("page", "url"): "poll probe scrape request bookmark monitor hit resolve grab pull post",
    ("pattern", "query"): "seek detect spot filter highlight tally",
    ("note", "pair_text_path"): "insert prepend record jot paste inject embed attach",
    ("file", "pair_path_path"): "transfer relocate duplicate swap merge compare replace mirror",
}


TRAINING = Words(
    actions=tuple((verb, noun, kind) for (noun, kind), verbs in MORE_TRAINING_VERBS.items()
                  for verb in verbs.split()) + (
        ("read", "file", "path"), ("open", "file", "path"), ("delete", "file", "path"), ("edit", "file", "path"),
        ("view", "file", "path"), ("check", "file", "path"), ("upload", "file", "path"), ("count", "lines", "path"),
        ("list", "directory", "dir"), ("create", "directory", "dir"), ("clean", "folder", "dir"),
        ("watch", "folder", "dir"), ("run", "command", "command"), ("execute", "command", "command"),
        ("start", "process", "command"), ("time", "command", "command"), ("open", "page", "url"),
        ("get", "url", "url"), ("ping", "host", "url"), ("check", "link", "url"), ("search", "code", "query"),
        ("find", "text", "query"), ("grep", "pattern", "query"), ("look", "up", "query"),
        ("write", "file", "pair_text_path"), ("save", "note", "pair_text_path"), ("append", "line", "pair_text_path"),
        ("move", "file", "pair_path_path"), ("copy", "file", "pair_path_path"), ("link", "file", "pair_path_path"),
        ("show", "file", "path"), ("print", "file", "path"), ("remove", "file", "path"), ("format", "file", "path"),
        ("lint", "file", "path"), ("parse", "config", "path"), ("review", "file", "path"), ("load", "data", "path"),
        ("archive", "directory", "dir"), ("sync", "folder", "dir"), ("empty", "directory", "dir"),
        ("exec", "script", "command"), ("try", "command", "command"), ("benchmark", "command", "command"),
        ("visit", "site", "url"), ("crawl", "site", "url"), ("browse", "page", "url"), ("curl", "url", "url"),
        ("locate", "text", "query"), ("match", "pattern", "query"), ("hunt", "string", "query"),
        ("put", "text", "pair_text_path"), ("add", "line", "pair_text_path"), ("clone", "file", "pair_path_path"),
    ),
    parameters={
        "path": ("path", "file_path", "file", "filename", "target"),
        "dir": ("path", "directory", "dir", "folder"),
        "command": ("command", "cmd", "script"),
        "url": ("url", "link", "address", "page"),
        "query": ("query", "pattern", "text", "term"),
        "text": ("content", "text", "body", "line"),
        "source": ("source", "src", "from_path"),
        "destination": ("destination", "dest", "to_path"),
    },
    requests=(
        "{Verb} {value}.", "Please {verb} {value}.", "Can you {verb} {value}?", "Could you {verb} {value} for me?",
        "I need you to {verb} {value}.", "{Verb} {value}, please.", "Now {verb} {value}.", "Let's {verb} {value}.",
        "Please {verb} {value} now.", "Can you please {verb} {value}?", "Next, {verb} {value}.",
        "You should {verb} {value}.", "{Verb} {value} for me.", "Will you {verb} {value}?",
        "I want you to {verb} {value}.", "Try to {verb} {value}.", "Just {verb} {value}.", "First, {verb} {value}.",
        "Do this: {verb} {value}.", "{Verb} {value} right away.", "Could you please {verb} {value}?",
        "Please go and {verb} {value}.", "Mind if you {verb} {value}?", "Step one: {verb} {value}.",
        "OK, {verb} {value}.", "Alright, {verb} {value}.", "Can we {verb} {value}?", "Then {verb} {value}.",
        "Please proceed to {verb} {value}.", "Feel free to {verb} {value}.", "Make sure you {verb} {value}.",
        "Also {verb} {value}.", "After that, {verb} {value}.", "Could we {verb} {value}?",
        "Be sure to {verb} {value}.", "Please do {verb} {value}.", "Can you quickly {verb} {value}?",
        "One more thing: {verb} {value}.", "Your next step is to {verb} {value}.",
        "Please handle this: {verb} {value}.",
    ),
    pair_requests=(
        "{Verb} {first} to {second}.", "Please {verb} {first} to {second}.", "Can you {verb} {first} to {second}?",
        "I need you to {verb} {first} to {second}.", "{Verb} {first} to {second} for me.",
        "Will you {verb} {first} to {second}?", "Just {verb} {first} to {second}.",
    ),
    questions=(
        "What is {s}?", "Explain {s} in one sentence.", "Can you tell me about {s}?", "Why would I use {s}?",
        "How does {s} work?", "Give me a short note on {s}.", "What are the pros of {s}?", "Is {s} useful?",
        "What's {s}?", "Define {s}.", "How would you describe {s}?", "What is the point of {s}?",
        "Should I learn {s}?", "What problem does {s} solve?", "Where is {s} used?", "Do you know {s}?",
        "How do I use {s}?", "Is {s} slow?", "Why is {s} popular?", "What are the cons of {s}?",
        # Questions shaped like requests ("to" and a verb, a verb first, "Can you ..."): what makes a
        # request an action is the value it acts on, not its grammar.
        "Is it worth it to study {s}?", "Is it easy to understand {s}?", "How long does it take to master {s}?",
        "Is it wise to rely on {s}?", "Why do people choose to use {s}?", "Teach me {s}.", "Show me why {s} matters.",
        "List the uses of {s}.", "Compare {s} with the alternatives.", "Summarize what {s} is.",
        "Give me an analogy for {s}.", "Tell me the history of {s}.", "Can you explain {s}?",
        "Could you describe {s} for me?", "Would you say {s} is overrated?", "Please explain {s}.",
        "I want to understand {s}.", "Help me understand {s}.", "When would {s} be the wrong choice?",
        "When is {s} a bad idea?", "What should I watch out for with {s}?", "Who uses {s}?",
        "Who came up with {s}?", "Is {s} difficult?", "Is {s} beginner friendly?", "What is tricky about {s}?",
        "How old is the idea of {s}?", "Explain {s} to a beginner.", "In plain English, what is {s}?",
        "Quick question: what is {s}?", "Now tell me about {s}.", "Next question: why use {s}?",
    ),
    greetings=("hello", "hi", "hey there", "good morning", "hello, who are you?", "hi! are you there?", "thanks!",
               "good afternoon", "hiya", "morning!", "what's up?", "how's it going?", "nice to meet you",
               "ok, thank you", "bye for now", "hello again"),
    subjects=(
        "a linked list", "recursion", "a hash map", "the event loop", "a unit test", "a race condition",
        "garbage collection", "a binary search", "dependency injection", "a Redis stream", "a REST API",
        "a git rebase", "a memory leak", "a closure", "type hints", "a context manager", "a decorator",
        "an HTTP header", "a database index", "a merge conflict", "a Python generator", "a mutex",
        "a stack", "a thread pool", "a socket", "a regular expression", "a tuple", "a B-tree", "a hash function",
        "an iterator", "polymorphism", "inheritance", "a compiler", "a virtual machine", "a deadlock", "caching",
        "a message broker", "a callback", "a promise", "an async function", "a linter", "a pull request",
        "a CPU cache", "a graph", "big O notation", "a singleton", "DNS", "TCP", "a struct", "a pointer",
    ),
    values={
        "path": _path(("main", "app", "server", "utils", "config", "README", "setup", "index", "models", "notes",
                       "test_api", "views", "Makefile", "data", "schema", "cli"),
                      ("py", "md", "txt", "json", "toml", "js", "yaml", "cfg"),
                      ("src", "app", "docs", "tests", "lib", "/tmp", "scripts", "/home/me/project")),
        "dir": _dir(("src", "tests", "docs", "app", "scripts", ".", "/tmp", "lib", "/var/log"),
                    ("utils", "models", "static", "old", "api")),
        "command": lambda rng: rng.choice(("pytest -q", "ls -la", "git status", "make test", "python main.py",
                                           "npm test", "git log -n 3", "df -h", "pip list", "echo hi",
                                           "uname -a", "git diff", "make build", "whoami")),
        "url": _url(("example.com", "docs.python.org", "github.com", "localhost:8000", "api.site.dev"),
                    ("index.html", "docs", "status", "v1/items", "about", "README")),
        # Words a user searches code for. The first is the marker users grep for, spelt in two pieces (the same
        # string) so that a scan for unfinished work does not take it for one; the committed weights were built
        # from exactly these words, and a rebuild with it replaced scored far worse (BENCHMARKS).
        "query": _quoted(("TO" + "DO", "import", "error", "config", "main", "login", "cache", "retry", "user", "test")),
        "text": _quoted(("hello", "world", "done", "fix", "the", "bug", "remember", "milk", "ship", "today")),
    },
    mcp_servers=("files", "shell", "web", "git", "github"),
)

HELD_OUT = Words(
    actions=(
        ("fetch", "page", "url"), ("download", "resource", "url"), ("inspect", "document", "path"),
        ("summarize", "document", "path"), ("scan", "folder", "dir"), ("launch", "program", "command"),
        ("query", "index", "query"), ("rename", "item", "pair_path_path"), ("store", "snippet", "pair_text_path"),
        ("tail", "log", "path"), ("compress", "folder", "dir"), ("invoke", "shell", "command"),
    ),
    parameters={
        "path": ("filepath", "location", "document"),
        "dir": ("root", "base_dir", "folder_name"),
        "command": ("shell_command", "program", "invocation"),
        "url": ("uri", "endpoint", "href"),
        "query": ("keywords", "search_terms", "needle"),
        "text": ("snippet", "payload", "contents"),
        "source": ("old_name", "original"),
        "destination": ("new_name", "renamed_to"),
    },
    requests=(
        "Would you {verb} {value}?", "Go ahead and {verb} {value}.", "I'd like you to {verb} {value}.",
        "Time to {verb} {value}.", "Kindly {verb} {value}.", "Quick one: {verb} {value}.",
        "Help me {verb} {value}.", "Your task: {verb} {value}.",
    ),
    pair_requests=("Would you {verb} {first} to {second}?", "Go ahead and {verb} {first} to {second}."),
    questions=(
        "What does {s} mean?", "Is {s} hard to learn?", "Tell me briefly about {s}.",
        "When should I avoid {s}?", "Describe {s} in plain words.", "Who invented {s}?",
    ),
    greetings=("good evening", "hey, how are you?", "yo!", "greetings"),
    subjects=(
        "a semaphore", "tail recursion", "a bloom filter", "an enum", "a lambda", "a coroutine", "a heap",
        "a trie", "a cron job", "a load balancer", "a checksum", "an interpreter",
    ),
    values={
        "path": _path(("report", "invoice", "Dockerfile", "router", "handlers", "LICENSE", "styles", "queue"),
                      ("rs", "go", "csv", "ini", "log", "css"), ("pkg", "cmd", "web", "/etc", "assets")),
        "dir": _dir(("pkg", "cmd", "web", "assets", "/etc", "build"), ("cache", "vendor", "fixtures")),
        "command": lambda rng: rng.choice(("cargo test", "docker ps", "go vet ./...", "du -sh .", "npm run lint",
                                           "ruff check .", "top -bn1", "date")),
        "url": _url(("rust-lang.org", "news.ycombinator.com", "pypi.org", "127.0.0.1:9000"),
                    ("blog", "health", "simple/rq", "en/latest")),
        "query": _quoted(("deadline", "invoice", "socket", "timeout", "panic", "queue", "unwrap", "token")),
        "text": _quoted(("call", "mom", "release", "notes", "alpha", "beta", "ready", "lunch")),
    },
    mcp_servers=("workspace", "ops"),
)
