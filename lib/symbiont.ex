defmodule Symbiont do
  @moduledoc """
  A living system of agents: the BEAM supervises, Python thinks, WebAssembly sandboxes.

  Agents are Python classes or Wasm modules, each run in a host OS process owned by a
  `Symbiont.Host`; they talk through topics of `Symbiont.Mesh`, across every connected
  node. This module is the public API and the helpers for a live iex session
  (`make shell`).

  ## Supervision tree

      Symbiont.Supervisor (rest_for_one)
      ├── Symbiont.Telemetry       owner of the telemetry handler table
      ├── Symbiont.Host.Registry   unique names of hosts
      ├── Symbiont.Agent.Registry  unique ids of agents
      ├── Symbiont.Mesh            the mesh: a :pg scope, the group registry, the
      │                            adapter (Registry + :pg forwarder) and its server
      ├── Symbiont.TaskSupervisor  calls from Python into the BEAM
      ├── Symbiont.Hosts           DynamicSupervisor of Symbiont.Host
      │     └── Symbiont.Host ── Port ── python -m symbiont.host
      ├── Symbiont.Agents          DynamicSupervisor of Symbiont.Agent.Server, each
      │                            attached to a slot of a host
      ├── Symbiont.Deploy          canaries, promotions and rollbacks of Wasm agents
      ├── Symbiont.Manifest        the desired state, and the reconciler that repairs drift
      ├── Symbiont.Conductor.Audit the trail of remediations (outlives the conductor)
      ├── Symbiont.Conductor       observe -> decide (Python policy) -> act, every tick
      ├── Symbiont.StatusPage      the live status page (when configured): its feed
      │                            and an :inets httpd on 127.0.0.1
      └── Symbiont.Host.Standby    warm standby host processes, so that a crashed host
                                   serves again in milliseconds (`:standby_hosts`)

  `:rest_for_one` because each child depends on those before it: a restart of the host
  supervisor restarts the agents and the manifest, which starts them again.

  ## In iex

      iex> Symbiont.status()
      iex> Symbiont.topology()
      iex> Symbiont.publish("orders.created", %{"id" => 7, "amount" => 12.5})
  """

  alias Symbiont.Host

  @doc """
  Prints the running hosts and their agents (status, OS pid, uptime, restarts, in-flight
  deliveries, handled events) and returns `:ok`.

      iex> Symbiont.status()
      :ok
  """
  @spec status() :: :ok
  def status do
    IO.puts(format_status(hosts()))
  end

  @doc "Information about every host, sorted by name."
  @spec hosts() :: [map]
  def hosts do
    Symbiont.Hosts
    |> DynamicSupervisor.which_children()
    |> Enum.flat_map(fn {_, pid, _, _} ->
      case is_pid(pid) && Host.info(pid) do
        {:ok, info} -> [info]
        _ -> []
      end
    end)
    |> Enum.sort_by(& &1.name)
  end

  @doc """
  Information about every running agent (queue, in-flight, counters, decoded state, and
  its host's OS pid and crashes), sorted by host, then id.
  """
  @spec agents() :: [map]
  def agents do
    for host <- hosts(), agent <- host.agents do
      Map.merge(agent, %{os_pid: host.os_pid, crashes: host.crashes})
    end
  end

  @doc """
  The audit trail of remediations, newest first (`Symbiont.Conductor.Audit`): what was
  done (restart, scale, quarantine, rollback...), to which agent, by whom (supervisor,
  deploy, conductor, operator), why, and the evidence behind the decision. Actions the
  conductor refused or failed to apply are there too, with why (`"result"`).

      iex> is_list(Symbiont.remediations())
      true
  """
  @spec remediations(pos_integer) :: [map]
  def remediations(n \\ 50), do: Symbiont.Conductor.Audit.entries(n)

  @doc """
  Adds an agent to the manifest and starts it (see `Symbiont.Manifest.spawn_agent/2`);
  the spec is validated like a config entry.

      iex> Symbiont.spawn_agent(name: "doc agent", python: "m:A")
      {:error, ~s(expected agent :name to be 1 to 64 letters, digits, "_", "-" or ".", got: "doc agent")}
  """
  @spec spawn_agent(keyword | map) :: {:ok, String.t()} | {:error, String.t()}
  def spawn_agent(spec) do
    with {:ok, name} <- Symbiont.Manifest.spawn_agent(spec) do
      Symbiont.Remediation.publish("spawn", name, "spawned by hand", by: "operator")
      {:ok, name}
    end
  end

  @doc """
  Runs `n` replicas of agent `name` (a queue group: each event reaches one of them),
  starting or retiring replicas to match; retired replicas hand their waiting events to
  the first one.

      iex> Symbiont.scale("doc-nobody", 2)
      {:error, ~s<agent "doc-nobody" is not in the manifest (its agents: [])>}
  """
  @spec scale(String.t(), pos_integer) :: :ok | {:error, String.t()}
  def scale(name, n) do
    with :ok <- Symbiont.Manifest.scale(name, n) do
      Symbiont.Remediation.publish("scale", name, "scaled by hand",
        by: "operator",
        fields: %{"replicas" => n}
      )
    end
  end

  @doc """
  Removes agent `name` from the manifest: its replicas stop, the events still waiting for
  it go to the dead letters (reason `"retired"`), and a `retired` health event is
  published.
  """
  @spec retire(String.t()) :: :ok | {:error, String.t()}
  def retire(name) do
    with :ok <- Symbiont.Manifest.retire(name) do
      Symbiont.Remediation.publish("retire", name, "retired by hand", by: "operator")
    end
  end

  @doc """
  Reads `config/config.exs` again and applies what changed in its `:agents`, live (see
  `Symbiont.Manifest.reload/2`): returns `{:ok, %{started:, retired:, rescaled:,
  upgraded:}}`, or `{:error, message}` and changes nothing when the new config is bad.
  """
  @spec reload_manifest() :: {:ok, map} | {:error, String.t()}
  def reload_manifest, do: Symbiont.Manifest.reload()

  @doc """
  Deploys a new version of a Wasm agent: a canary runs `wasm_path` beside the old
  version and is promoted, or rolled back, by itself (see `Symbiont.Deploy` for the
  rules and the options). Each step is an event on `symbiont.remediation`.

      {:ok, %{canary: "pricing#canary"}} = Symbiont.deploy("pricing", "priv/wasm/pricing_v2.wasm")
  """
  @spec deploy(String.t(), String.t(), keyword) :: {:ok, map} | {:error, String.t()}
  def deploy(agent, wasm_path, opts \\ []), do: Symbiont.Deploy.deploy(agent, wasm_path, opts)

  @doc """
  Rolls a Wasm agent back: its running canary, or else its last promotion.

      iex> Symbiont.rollback("doc-nobody")
      {:error, ~s(agent "doc-nobody" has no deploy to roll back)}
  """
  @spec rollback(String.t()) :: {:ok, map} | {:error, String.t()}
  def rollback(agent), do: Symbiont.Deploy.rollback(agent)

  @doc """
  Publishes `value` on `topic`: it is encoded once as msgpack and delivered to every
  subscriber on every node, agents included (one replica of each agent).

  Options:

    * `:checked` - `true` refuses the publish with `{:error, :overloaded}`, sending
      nothing, when an agent on this node that rejects on overflow has a full queue (see
      `Symbiont.Mesh.publish/3`). Default: `false`.
    * `:from` - the publisher's name in `topology/0`. Default: `"elixir"`.

  Returns `{:error, {:unencodable, term}}` when `value` has no msgpack form.

      iex> Symbiont.publish("doc.nobody.listens", %{"hello" => "world"})
      :ok
  """
  @spec publish(String.t(), term, keyword) :: :ok | {:error, term}
  def publish(topic, value, opts \\ []) when is_binary(topic) and is_list(opts) do
    with {:ok, event} <- Symbiont.Event.new(topic, value, Keyword.get(opts, :from)),
         do: Symbiont.Mesh.publish(Symbiont.Mesh, event, opts)
  end

  @doc """
  Subscribes the calling process to `topic` on the node's mesh (`Symbiont.Mesh`): it then
  receives a `%Symbiont.Event{}` for each value published there. Options as in
  `Symbiont.Mesh.subscribe/3` (`:group`, `:metadata`).

      iex> Symbiont.subscribe("doc.subscribe")
      :ok
      iex> Symbiont.publish("doc.subscribe", [1, 2])
      :ok
      iex> receive do: (%Symbiont.Event{} = e -> Symbiont.Event.decode(e))
      {:ok, [1, 2]}
  """
  @spec subscribe(String.t(), keyword) :: :ok | {:error, term}
  def subscribe(topic, opts \\ []) when is_binary(topic) and is_list(opts),
    do: Symbiont.Mesh.subscribe(Symbiont.Mesh, topic, opts)

  @doc "Unsubscribes the calling process from `topic` on the node's mesh."
  @spec unsubscribe(String.t()) :: :ok
  def unsubscribe(topic) when is_binary(topic),
    do: Symbiont.Mesh.unsubscribe(Symbiont.Mesh, topic)

  @doc """
  Who publishes what to whom, across every node of the mesh: publishers → topics →
  subscribers, with queue groups, nodes and message counts. Prints as a table in iex;
  `Symbiont.Topology.to_mermaid/1`, `to_dot/1` and `write/2` export it.

      iex> %Symbiont.Topology{} = Symbiont.topology()
  """
  @spec topology() :: Symbiont.Topology.t()
  def topology do
    [node() | Node.list()]
    |> :erpc.multicall(Symbiont.Mesh, :node_stats, [Symbiont.Mesh], 5_000)
    # Nodes that do not run Symbiont (a remote shell, say) answer with an error.
    |> Enum.flat_map(fn
      {:ok, stats} -> [stats]
      _ -> []
    end)
    |> Symbiont.Topology.build()
  end

  @doc false
  @spec format_status([map]) :: String.t()
  def format_status(hosts) do
    header = [
      "HOST",
      "STATUS",
      "OS PID",
      "UPTIME",
      "CRASHES",
      "AGENT",
      "TOPICS",
      "QUEUE",
      "IN-FLIGHT",
      "HANDLED"
    ]

    rows =
      for h <- hosts, a <- if(h.agents == [], do: [%{}], else: h.agents) do
        [
          h.name,
          to_string(h.status),
          to_string(h.os_pid || "-"),
          format_uptime(h.uptime_ms),
          to_string(h.crashes),
          Map.get(a, :python, "-"),
          a |> Map.get(:topics, []) |> Enum.join(",") |> blank("-"),
          to_string(Map.get(a, :queue, "-")),
          to_string(Map.get(a, :in_flight, "-")),
          to_string(Map.get(a, :handled, "-"))
        ]
      end

    title =
      "Symbiont on #{node()}: #{length(hosts)} host(s), #{Enum.sum(Enum.map(hosts, &length(&1.agents)))} agent(s)"

    Enum.join([title, "" | table([header | rows])], "\n")
  end

  defp table(rows) do
    widths =
      rows
      |> Enum.zip_with(& &1)
      |> Enum.map(fn col -> col |> Enum.map(&String.length/1) |> Enum.max() end)

    for row <- rows do
      row
      |> Enum.zip(widths)
      |> Enum.map_join("  ", fn {cell, w} -> String.pad_trailing(cell, w) end)
      |> String.trim_trailing()
    end
  end

  defp blank("", default), do: default
  defp blank(s, _), do: s

  defp format_uptime(nil), do: "-"
  defp format_uptime(ms) when ms < 1_000, do: "#{ms}ms"
  defp format_uptime(ms) when ms < 60_000, do: "#{div(ms, 1000)}s"
  defp format_uptime(ms) when ms < 3_600_000, do: "#{div(ms, 60_000)}m#{rem(div(ms, 1000), 60)}s"
  defp format_uptime(ms), do: "#{div(ms, 3_600_000)}h#{rem(div(ms, 60_000), 60)}m"
end
