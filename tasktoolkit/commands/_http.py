"""The API of a service that mounts the endpoints, as the commands reach it over HTTP.

Who the caller is, as OpenStack's command line says it:

- with keystoneauth1 (the ``[oslo]`` extra): ``--os-cloud NAME`` (or ``$OS_CLOUD``)
  reads the cloud from ``clouds.yaml`` (``$OS_CLIENT_CONFIG_FILE``,
  ``./clouds.yaml``, ``~/.config/openstack/clouds.yaml``,
  ``/etc/openstack/clouds.yaml``); else ``$OS_AUTH_URL`` and the other ``OS_*``
  variables (``--os-auth-type`` or ``$OS_AUTH_TYPE``, default ``password``)
  load keystoneauth's plugin from its own options; a token alone
  (``--os-token``, ``$OS_TOKEN``) is sent as it is (keystoneauth's ``admin_token``).
  The service's URL is ``--url``, or the catalog's endpoint of
  ``--os-service-type`` (``--os-interface``, ``--os-region-name``);
- without it: ``--os-token`` as ``X-Auth-Token``, and any ``--header``.

Errors (refused, unreachable, not found) end the command with one line.

Example::

    OS_CLOUD=devstack tasktoolkit tasks list --os-service-type network
    tasktoolkit operations show req-8c5a... --url http://127.0.0.1:9696 --os-token "$TOKEN"
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tasktoolkit._checks import HTTP_TOKEN
from tasktoolkit.commands._common import CommandError, first_line

__all__ = ["URL_ENV", "Api", "ApiError", "api_of", "header", "http_arguments", "uses_http"]

URL_ENV = "TASKTOOLKIT_URL"
#: Where clouds.yaml is looked for, in this order (as openstacksdk looks).
CLOUDS_YAML = (
    Path("clouds.yaml"),
    Path("~/.config/openstack/clouds.yaml").expanduser(),
    Path("/etc/openstack/clouds.yaml"),
)
_TIMEOUT = 60.0
_EXTRA = "pip install 'tasktoolkit[oslo]'"


class ApiError(CommandError):
    """The service answered with an error (``status``), said in one line."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Api(Protocol):
    """The endpoints of one service, for one caller."""

    def request(self, method: str, path: str, query: str = "") -> tuple[int, dict[str, Any]]:
        """``method path?query``: the status and JSON document of a 2xx answer.

        :raises ApiError: an error answer.
        :raises CommandError: anything else (said in one line).
        """


def http_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say which service to ask, and as whom."""
    group = parser.add_argument_group("over HTTP (instead of --db-url)")
    # --url and --os-cloud default to their variables only when no --db-url is given
    # (uses_http): a variable left in the environment never overrides an option.
    group.add_argument(
        "--url",
        help=f"the service's endpoint, where /tasks and /operations are (default: ${URL_ENV})",
    )
    group.add_argument(
        "--os-cloud",
        metavar="NAME",
        help="the cloud of clouds.yaml to authenticate with (default: $OS_CLOUD; keystoneauth1)",
    )
    group.add_argument(
        "--os-auth-type",
        default=os.environ.get("OS_AUTH_TYPE"),
        metavar="TYPE",
        help="keystoneauth's plugin, loaded from the OS_* variables (default: $OS_AUTH_TYPE, "
        "else password when $OS_AUTH_URL is set)",
    )
    group.add_argument(
        "--os-token",
        default=os.environ.get("OS_TOKEN"),
        metavar="TOKEN",
        help="send this token (default: $OS_TOKEN)",
    )
    group.add_argument(
        "--os-service-type",
        metavar="TYPE",
        help="find --url in the catalog: the endpoint of this service type",
    )
    group.add_argument(
        "--os-interface",
        default=os.environ.get("OS_INTERFACE"),
        metavar="INTERFACE",
        help="the catalog's interface (public, internal, admin; default: $OS_INTERFACE)",
    )
    group.add_argument(
        "--os-region-name",
        default=os.environ.get("OS_REGION_NAME"),
        metavar="REGION",
        help="the catalog's region (default: $OS_REGION_NAME)",
    )
    group.add_argument(
        "--header",
        type=header,
        action="append",
        default=[],
        dest="headers",
        metavar="'NAME: VALUE'",
        help="send this header with every request (X-Roles: admin); repeatable",
    )


def header(text: str) -> tuple[str, str]:
    """``--header "Name: value"`` as a name and a value (an argparse type).

    :raises argparse.ArgumentTypeError: not a header.
    """
    name, colon, value = text.partition(":")
    value = value.strip()
    if not colon or not HTTP_TOKEN.match(name.strip()) or not value.isprintable():
        raise argparse.ArgumentTypeError(f"{text!r} is not a header (write it as 'Name: value')")
    return name.strip(), value


def uses_http(args: argparse.Namespace) -> bool:
    """Whether the command asks a service rather than the database: ``--url``,
    ``--os-cloud`` or ``--os-service-type`` was given; or no database was (``--db-url``,
    ``$TASKTOOLKIT_DB_URL``) and ``$TASKTOOLKIT_URL`` or ``$OS_CLOUD`` says which service.

    Fills ``args.url`` and ``args.os_cloud`` from their variables when a service is asked.
    """
    if not (args.url or args.os_cloud or args.os_service_type) and args.db_url:
        return False
    args.url = args.url or os.environ.get(URL_ENV)
    args.os_cloud = args.os_cloud or os.environ.get("OS_CLOUD")
    return bool(args.url or args.os_cloud or args.os_service_type)


def api_of(args: argparse.Namespace) -> Api:
    """The service ``args`` name, asked as the caller they say."""
    keystone = _keystone_auth(args)
    if keystone is not None:
        return keystone
    if args.os_service_type:
        raise CommandError(f"--os-service-type needs keystoneauth1 and a catalog: {_EXTRA}")
    headers = dict(args.headers)
    if args.os_token:
        headers["X-Auth-Token"] = args.os_token
    return _Plain(_base(args.url), headers)


def _base(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise CommandError(f"--url {url!r} is not an http:// or https:// URL")
    return url.rstrip("/")


def _keystone_wanted(args: argparse.Namespace) -> bool:
    return bool(args.os_cloud or args.os_auth_type or os.environ.get("OS_AUTH_URL"))


def _keystone_auth(args: argparse.Namespace) -> Api | None:
    """A keystoneauth session's API, when keystoneauth1 is installed and asked for."""
    try:
        from keystoneauth1 import loading, session
    except ImportError:
        if _keystone_wanted(args):
            what = "--os-cloud" if args.os_cloud else "the OS_* variables"
            raise CommandError(f"{what}: keystoneauth1 is not installed; {_EXTRA}") from None
        return None
    if not _keystone_wanted(args) and not args.os_token:
        return None
    options: Mapping[str, Any]
    verify: bool | str = os.environ.get("OS_CACERT") or True
    region, interface = args.os_region_name, args.os_interface
    if args.os_cloud:
        cloud = _cloud(args.os_cloud)
        auth_type = args.os_auth_type or cloud.get("auth_type") or "password"
        options = dict(cloud.get("auth") or {})
        region = region or cloud.get("region_name")
        interface = interface or cloud.get("interface")
        verify = cloud.get("cacert") or cloud.get("verify", verify)
    elif _keystone_wanted(args):
        auth_type = args.os_auth_type or "password"
        options = _from_environment(loading, auth_type)
    else:
        # A token alone, sent as it is to --url.
        auth_type = "admin_token"
        options = {"token": args.os_token, "endpoint": args.url}
    if args.os_token and auth_type != "admin_token":
        options = {**options, "token": args.os_token}
    try:
        loader: Any = loading.get_plugin_loader(auth_type)
    except Exception as exc:  # keystoneauth's NoMatchingPlugin
        raise CommandError(f"--os-auth-type {auth_type!r}: {first_line(exc)}") from None
    try:
        plugin = loader.load_from_options_getter(_getter(options))
    except Exception as exc:  # MissingRequiredOptions, a bad value, ...
        raise CommandError(f"keystoneauth ({auth_type}): {first_line(exc)}") from None
    sess = session.Session(auth=plugin, verify=verify, timeout=_TIMEOUT)
    return _Keystone(sess, args, region=region, interface=interface)


def _getter(options: Mapping[str, Any]) -> Callable[[Any], Any]:
    """keystoneauth's option getter over ``options`` (by dest, ``project_name``, or name,
    ``project-name``)."""

    def get(opt: Any) -> Any:
        for key in (opt.dest, opt.name, *(o.dest for o in opt.deprecated)):
            if options.get(key) is not None:
                return options[key]
        return None

    return get


def _from_environment(loading: Any, auth_type: str) -> dict[str, str]:
    """The plugin's options from its ``OS_*`` variables (``OS_USERNAME``, ``OS_PROJECT_NAME``)."""
    try:
        opts = loading.get_plugin_options(auth_type)
    except Exception as exc:
        raise CommandError(f"--os-auth-type {auth_type!r}: {first_line(exc)}") from None
    found: dict[str, str] = {}
    for opt in opts:
        for name in opt.argparse_envvars:
            if os.environ.get(name):
                found[opt.dest] = os.environ[name]
                break
    return found


def _cloud(name: str) -> dict[str, Any]:
    """The cloud ``name`` of the first clouds.yaml there is."""
    import yaml  # with oslo.config, as keystoneauth1 is with the [oslo] extra

    configured = os.environ.get("OS_CLIENT_CONFIG_FILE")
    paths = [Path(configured)] if configured else list(CLOUDS_YAML)
    for path in paths:
        if not path.is_file():
            continue
        try:
            document = yaml.safe_load(path.read_text("utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise CommandError(f"{path}: {first_line(exc)}") from None
        clouds = document.get("clouds") if isinstance(document, dict) else None
        if not isinstance(clouds, dict) or not isinstance(clouds.get(name), dict):
            raise CommandError(f"{path} has no cloud {name!r}")
        cloud: dict[str, Any] = clouds[name]
        return cloud
    raise CommandError(f"--os-cloud {name}: no clouds.yaml ({', '.join(map(str, paths))})")


def _error(status: int, body: bytes, what: str) -> ApiError:
    """One line of an error answer (the contract's ``errors[0].detail``)."""
    try:
        detail = f": {json.loads(body)['errors'][0]['detail']}"
    except (ValueError, KeyError, IndexError, TypeError):
        detail = ""
    return ApiError(f"{what}: HTTP {status}{detail}", status)


def _document(status: int, body: bytes, what: str) -> tuple[int, dict[str, Any]]:
    try:
        document = json.loads(body)
    except ValueError:
        raise CommandError(f"{what}: HTTP {status}, not JSON") from None
    if not isinstance(document, dict):
        raise CommandError(f"{what}: HTTP {status}, not a JSON object")
    return status, document


class _Plain:
    """urllib, with the headers given."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = {**headers, "Accept": "application/json"}

    def request(self, method: str, path: str, query: str = "") -> tuple[int, dict[str, Any]]:
        url = self.base + path + (f"?{query}" if query else "")
        what = f"{method} {url}"
        try:
            with urlopen(
                Request(url, method=method, headers=self.headers), timeout=_TIMEOUT
            ) as response:
                return _document(response.status, response.read(), what)
        except HTTPError as error:
            with error:
                raise _error(error.code, error.read(), what) from None
        except URLError as error:
            raise CommandError(f"cannot reach {url}: {error.reason}") from None
        except OSError as error:
            raise CommandError(f"{what}: {first_line(error)}") from None


class _Keystone:
    """A keystoneauth session: its plugin's token on every request, its catalog for the URL."""

    def __init__(
        self, sess: Any, args: argparse.Namespace, *, region: str | None, interface: str | None
    ) -> None:
        self.session = sess
        self.headers = {**dict(args.headers), "Accept": "application/json"}
        self.url: str | None = _base(args.url) if args.url else None
        self.service_type: str | None = args.os_service_type
        self.region, self.interface = region, interface
        if self.url is None and self.service_type is None:
            raise CommandError("over keystoneauth: pass --url or --os-service-type")

    def _endpoint(self) -> str:
        if self.url is None:
            endpoint = self.session.get_endpoint(
                service_type=self.service_type,
                interface=self.interface or "public",
                region_name=self.region,
            )
            if not endpoint:
                raise CommandError(f"the catalog has no {self.service_type!r} endpoint")
            self.url = str(endpoint).rstrip("/")
        return self.url

    def request(self, method: str, path: str, query: str = "") -> tuple[int, dict[str, Any]]:
        from keystoneauth1 import exceptions

        try:
            url = self._endpoint() + path + (f"?{query}" if query else "")
            response = self.session.request(
                url, method, headers=self.headers, raise_exc=False, authenticated=True
            )
        except exceptions.ClientException as exc:
            raise CommandError(f"{method} {path}: {first_line(exc)}") from None
        what = f"{method} {url}"
        if not 200 <= response.status_code < 300:
            raise _error(response.status_code, response.content, what)
        return _document(response.status_code, response.content, what)
