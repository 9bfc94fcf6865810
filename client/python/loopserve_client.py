"""The client as scripts written before the `loopserve` package import it:
`from loopserve_client import LoopClient`. New code: `import loopserve`."""

from loopserve.client import LoopClient, from_value, to_value  # noqa: F401
