defmodule Symbiont.StatusPage do
  @moduledoc """
  A live status page of the node, served by OTP's own `:inets` httpd on 127.0.0.1.

  The application starts it when it is configured (`make run` does, and logs the address
  as it starts):

      config :symbiont, status_page: [port: 4040]

  It shows, with nothing loaded from elsewhere (it works offline):

    * the topology (`Symbiont.topology/0`) drawn as SVG (`Symbiont.Topology.to_svg/1`);
    * a table of this node's agents, one row per replica, from `Symbiont.Observation`
      (what `Symbiont.status/0` and the conductor read too): role, host, status, health
      (and why, as the row's title), queue, in flight, handled, failed, crashes,
      restarts, failure rate, the operator's pins, topics;
    * a feed of health and remediation events (`Symbiont.Health`,
      `Symbiont.Remediation`), pushed to the open page as they happen; a page opened
      later shows the last ones (`:keep`).

  | path | what |
  |---|---|
  | `/` | the page |
  | `/events` | the feed as Server-Sent Events (`event: health` or `remediation`, `data:` JSON); a reconnecting browser resumes after its `Last-Event-ID` |
  | `/status.json` | what the page shows, as JSON (`snapshot/0`) |
  | `/topology.svg` | the diagram |
  | `/metrics` | the node's metrics in the Prometheus text format (`Symbiont.StatusPage.Metrics`) |

  Both stay small whatever the agents publish: the diagram draws the 100 busiest
  edges, `/status.json` lists the topics of the 1 000 busiest, and each says
  what it left out (see "Bounds" in `Symbiont.Topology`).

  ## Options

    * `:port` - the TCP port, 0 to 65535; 0 picks a free one (`url/0` tells which).
      Default: 4040.
    * `:ip` - the address to listen on, a tuple or a string. Default: `{127, 0, 0, 1}`:
      the page has no authentication, so it is for this machine only.
    * `:keep` - how many recent events the feed keeps for a page that opens. Default: 50.
    * `:hosts` - more names the page answers to, such as `["symbiont.example"]`. It
      answers a request only when its `Host:` header (without the port) is
      `127.0.0.1`, `localhost`, the `:ip` it listens on, or one of these; any other gets
      `403`. So a page on another site that resolves its own name to 127.0.0.1 (DNS
      rebinding) cannot read the page or `/status.json` through the browser.
      Default: `[]`.

  A port already in use is logged and the node runs on without its page.

  ## Supervision

      Symbiont.StatusPage (rest_for_one)
      ├── Symbiont.StatusPage.Feed     subscribed to the two topics; recent events and
      │                                the open streams
      ├── Symbiont.StatusPage.Metrics  the histogram and publish counters of /metrics
      └── Symbiont.StatusPage.Server   the httpd instance (routes: StatusPage.Handler)
  """

  use Supervisor

  alias Symbiont.StatusPage.{Feed, Metrics, Server}

  @defaults %{port: 4040, ip: {127, 0, 0, 1}, keep: 50, hosts: []}
  # The edges of the topology /status.json lists (the busiest; see Symbiont.Topology.busiest/2).
  @json_edges 1_000

  @host_name ~r/\A[A-Za-z0-9]([A-Za-z0-9.-]{0,252})\z/

  @doc """
  Starts the status page under a supervisor. Raises `ArgumentError` for invalid options
  (see `validate_options/1`).
  """
  @spec start_link(keyword) :: Supervisor.on_start()
  def start_link(opts \\ []) when is_list(opts) do
    case validate_options(opts) do
      {:ok, config} -> Supervisor.start_link(__MODULE__, config, name: __MODULE__)
      {:error, error} -> raise ArgumentError, Exception.message(error)
    end
  end

  @impl true
  def init(config) do
    root = Application.app_dir(:symbiont, "priv")

    children = [
      {Feed, keep: config.keep},
      Metrics,
      {Server, Map.put(config, :root, root)}
    ]

    Supervisor.init(children, strategy: :rest_for_one)
  end

  @doc """
  Validates the options once, at the edge: `{:ok, config}`, or an `:invalid`
  `Symbiont.Error` naming the option, its value and what is allowed (also in `details`).

      iex> Symbiont.StatusPage.validate_options(port: 0)
      {:ok, %{port: 0, ip: {127, 0, 0, 1}, keep: 50, hosts: []}}
      iex> {:error, error} = Symbiont.StatusPage.validate_options(port: 70000)
      iex> {error.reason, error.details}
      {:invalid, %{field: :port, value: 70000}}
      iex> error.message
      "expected :port of the status page to be an integer from 0 to 65535 (0: any free port), got: 70000"
      iex> {:error, error} = Symbiont.StatusPage.validate_options(ip: "localhost")
      iex> error.message
      ~s(expected :ip of the status page to be an IPv4 address such as "127.0.0.1", got: "localhost")
      iex> {:error, error} = Symbiont.StatusPage.validate_options(hosts: ["evil.example:80"])
      iex> error.message
      ~S|expected :hosts of the status page to be a list of host names (letters, digits, "-" and ".", no port), got: ["evil.example:80"]|
  """
  @spec validate_options(keyword) :: {:ok, map} | {:error, Symbiont.Error.t()}
  def validate_options(opts) when is_list(opts) do
    allowed = Map.keys(@defaults)

    with :ok <- known(opts, allowed),
         config = Map.merge(@defaults, Map.new(opts)),
         {:ok, ip} <- ip(config.ip),
         :ok <-
           check(
             config.port,
             &(is_integer(&1) and &1 in 0..65535),
             :port,
             "an integer from 0 to 65535 (0: any free port)"
           ),
         :ok <- check(config.keep, &(is_integer(&1) and &1 > 0), :keep, "a positive integer"),
         :ok <-
           check(
             config.hosts,
             &(is_list(&1) and Enum.all?(&1, fn h -> is_binary(h) and h =~ @host_name end)),
             :hosts,
             ~S|a list of host names (letters, digits, "-" and ".", no port)|
           ) do
      {:ok, %{config | ip: ip, hosts: Enum.map(config.hosts, &String.downcase/1)}}
    end
  end

  defp known(opts, allowed) do
    case Enum.find(opts, fn {k, _} -> k not in allowed end) do
      nil ->
        :ok

      {k, v} ->
        {:error,
         Symbiont.Error.new(
           :invalid,
           "unknown option #{inspect(k)} of the status page, allowed: #{inspect(allowed)}",
           field: k,
           value: v
         )}
    end
  end

  defp ip(ip) when is_tuple(ip) and tuple_size(ip) == 4 do
    if :inet.is_ipv4_address(ip), do: {:ok, ip}, else: bad_ip(ip)
  end

  defp ip(ip) when is_binary(ip) do
    case :inet.parse_ipv4strict_address(String.to_charlist(ip)) do
      {:ok, ip} -> {:ok, ip}
      {:error, _} -> bad_ip(ip)
    end
  end

  defp ip(ip), do: bad_ip(ip)

  defp bad_ip(ip),
    do:
      {:error,
       Symbiont.Error.new(
         :invalid,
         ~s(expected :ip of the status page to be an IPv4 address such as "127.0.0.1", got: #{inspect(ip)}),
         field: :ip,
         value: ip
       )}

  defp check(value, ok?, key, allowed) do
    if ok?.(value),
      do: :ok,
      else:
        {:error,
         Symbiont.Error.new(
           :invalid,
           "expected #{inspect(key)} of the status page to be #{allowed}, got: #{inspect(value)}",
           field: key,
           value: value
         )}
  end

  @doc """
  The page's address, such as `"http://127.0.0.1:4040/"`, or `nil` when it is not
  running.

      iex> Symbiont.StatusPage.url()
      nil
  """
  @spec url() :: String.t() | nil
  def url, do: Server.url()

  @doc """
  What the page shows, as plain maps and lists (`/status.json` is this, as JSON): `node`,
  `url`, `hosts`, `agents` (one map each, see the moduledoc), `topology` (the `topics` of
  `Symbiont.topology/0` that have its #{@json_edges} busiest edges, with `omitted` and
  `evicted`: the edges left out, and those the nodes' counters dropped, see
  `Symbiont.Topology`), `events` (the feed, oldest first: `%{id, kind, at_ms, event}`,
  `event` the decoded payload) and `keep`.
  """
  @spec snapshot() :: map
  def snapshot do
    feed = Feed.snapshot()
    hosts = Symbiont.hosts()
    pins = Symbiont.Pins.all()
    agents = for a <- Symbiont.agents(hosts), do: agent(a, Map.get(pins, a.name, %{}))
    topology = Symbiont.Topology.busiest(Symbiont.topology(), @json_edges)

    %{
      node: node(),
      url: url(),
      at_ms: System.system_time(:millisecond),
      keep: feed.keep,
      hosts: Enum.map(hosts, &host/1),
      agents: agents,
      topology: Map.take(topology, [:topics, :omitted, :evicted]),
      events: feed.events
    }
  end

  defp host(h) do
    Map.take(h, [:name, :status, :os_pid, :uptime_ms, :crashes])
    |> Map.put(:agents, Enum.map(h.agents, & &1.id))
  end

  # One replica's row: its Symbiont.Observation view, and the pins of its agent.
  defp agent(a, pins) do
    %{
      id: a.id,
      name: a.name,
      role: a.role,
      host: a.host,
      os_pid: a.os_pid,
      status: a.status,
      quarantined: a.quarantined,
      health: a.health,
      health_reason: a.health_reason,
      logic: a.version,
      topics: a.topics,
      queue: a.queue,
      max_queue: a.max_queue,
      queue_bytes: a.queue_bytes,
      max_queue_bytes: a.max_queue_bytes,
      in_flight: a.in_flight,
      handled: a.handled,
      failed: a.failed,
      crashes: a.crashes,
      restarts: a.restarts,
      start_failures: a.start_failures,
      failure_rate: a.failure_rate,
      p99_us: a.p99_us,
      pins:
        Map.new(pins, fn {field, pin} ->
          {field, %{value: pin.value, until_ms: pin.until_ms, reason: pin.reason}}
        end)
    }
  end
end
