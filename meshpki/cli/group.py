"""The `meshpki` command group and the entry point."""

from __future__ import annotations

import click

from meshpki import __version__
from meshpki.cli.options import ENV_SECRETS, MeshGroup


@click.group("meshpki", cls=MeshGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="meshpki")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """meshpki: one shared root of trust for a multi-cluster Istio mesh.

    Makes the root and one intermediate CA per cluster, verifies the bundles the
    way istiod and the proxies will, pushes them as the `cacerts` secret,
    rotates them without splitting the mesh, and audits expiry.

    \b
    Quick start:
      meshpki demo                          # the main job, in a throw-away store
      meshpki init-root                     # shared root, key encrypted
      meshpki issue cluster1 cluster2       # one intermediate bundle per cluster
      meshpki verify                        # every bundle and every pair, as istiod would
      meshpki push cluster1 --context ctx1  # write the cacerts secret
    """
    from meshpki.credentials import take_from_environ

    # before anything can start a child process (kubeconfig exec plugins): see credentials.py
    ctx.meta[ENV_SECRETS] = take_from_environ()


def main() -> None:
    from meshpki import scratch

    scratch.install_signal_handlers()  # the kubernetes client's copies of client keys go on SIGTERM too
    cli(prog_name="meshpki")
