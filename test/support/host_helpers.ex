defmodule Symbiont.HostHelpers do
  @moduledoc false
  # Shared by the tests that run real Python hosts.

  import ExUnit.Assertions

  @fixtures Path.expand("../fixtures/python", __DIR__)

  def fixtures, do: @fixtures

  def unique_name(prefix \\ "test"), do: "#{prefix}-#{System.unique_integer([:positive])}"

  @doc "Starts a host under the test supervisor and waits for its handshake."
  def start_host!(opts \\ []) do
    name = Keyword.get_lazy(opts, :name, fn -> unique_name() end)
    attach_host_events(name)
    opts = opts |> Keyword.put(:name, name) |> Keyword.put_new(:python_path, [@fixtures])
    pid = ExUnit.Callbacks.start_supervised!({Symbiont.Host, opts}, id: name)
    assert_receive {:host_start, ^name, %{os_pid: os_pid}}, 10_000
    %{name: name, pid: pid, os_pid: os_pid}
  end

  @doc """
  Starts a host running one agent named like the host (`prefix-N`) with `agent_opts`;
  returns `start_host!/1`'s map plus `:agent`, the agent's name.
  """
  def start_agent_host!(prefix, agent_opts) do
    name = unique_name(prefix)
    host = start_host!(name: name, agent: [name: name] ++ agent_opts)
    Map.put(host, :agent, name)
  end

  @doc "Sends {:host_start | :host_crash, name, metadata} to the caller for host `name`."
  def attach_host_events(name) do
    me = self()

    for {event, tag} <- [
          {[:symbiont, :host, :start], :host_start},
          {[:symbiont, :host, :crash], :host_crash}
        ] do
      id = {tag, name, make_ref()}

      :ok =
        Symbiont.Telemetry.attach(
          id,
          event,
          fn _e, m, %{host: host} = meta, _ ->
            if host == name, do: send(me, {tag, name, Map.merge(meta, m)})
          end,
          nil
        )

      ExUnit.Callbacks.on_exit(fn -> Symbiont.Telemetry.detach(id) end)
    end

    :ok
  end

  @doc "Waits (bounded) until `fun` returns true, polling an outside condition."
  def wait_until(fun, timeout \\ 2_000, step \\ 20) do
    deadline = System.monotonic_time(:millisecond) + timeout

    Stream.repeatedly(fn -> fun.() end)
    |> Enum.find(fn ok ->
      ok or System.monotonic_time(:millisecond) > deadline or (Process.sleep(step) && false)
    end)
  end

  @doc """
  Waits (bounded) for a health event of `kind` from `agent` on `symbiont.health` (the
  caller must be subscribed), skipping others; returns its decoded map.
  """
  def await_health(agent, kind, timeout \\ 10_000) do
    receive do
      %Symbiont.Event{topic: "symbiont.health", from: ^agent} = e ->
        case Symbiont.Event.decode!(e) do
          %{"kind" => ^kind} = health -> health
          _ -> await_health(agent, kind, timeout)
        end
    after
      timeout -> flunk("no #{kind} health event from #{agent}")
    end
  end

  def os_alive?(os_pid), do: Symbiont.Host.Reaper.alive?(os_pid)
end
