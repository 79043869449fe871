"""Rectify an LM that is reachable only through an OpenAI-compatible ``/v1/completions`` API.

The API gives the top-K next-token log-probabilities one token at a time (as the paper did with GPT-3);
a local Q_D caps that distribution and the token is sampled here, so the LM's weights are never needed.
"""

from rectify.remote.client import CompletionsClient, RemoteAPIError, RemoteConfig
from rectify.remote.sampler import RemoteSampler, build_remote_sampler
from rectify.remote.tokens import TokenMapper, token_bytes

__all__ = ["CompletionsClient", "RemoteAPIError", "RemoteConfig", "RemoteSampler", "TokenMapper",
           "build_remote_sampler", "token_bytes"]
