defmodule Symbiont.Agent.Probe do
  @moduledoc """
  Whether an agent can start, checked without starting it, so that one that cannot is
  refused at once, with why, instead of failing in its host again and again.

  The checks run in a Python host process of their own (`python -m symbiont.host`,
  started as the agents' hosts are: with the same executable, `:python_path` and
  environment, the application's unless given), one process for all the agents checked together, stopped when they are
  done: user code never runs in the BEAM, nor in the process that will run the agent.
  In it, `symbiont._probe.check_agent/1` does for each agent what its start does short
  of starting it:

    * a Python agent: its module is imported, the class looked up, checked to be a
      `symbiont.Agent`, and one instance constructed with the agent's name and config and
      no state, then dropped. **The module's top-level code and the class's `__init__`
      run**, with whatever side effects they have (Python agents are trusted code, and
      that code runs the same when the agent starts); `on_start` does not run, and
      nothing is subscribed or published.
    * a Wasm agent: its module is compiled (through the module cache, which the agent's
      host then reads), its exports checked against docs/WASM_ABI.md, and it is
      instantiated within the agent's limits, which runs its `symbiont_init` in the
      sandbox with imports that go nowhere.

  Each check is bounded by `:probe_timeout_ms` (application env, default
  #{30_000} ms): one that takes longer (an import that never returns) fails, and so does
  one that kills the process (with its exit and last output); the agents after it are
  checked in a fresh process.

  Where it is used: at node start (`Symbiont.Manifest`, "Checked before it serves"),
  `Symbiont.spawn_agent/1`, `Symbiont.reload_manifest/0` (new and changed agents),
  `Symbiont.deploy/3` (the new module), and `Symbiont.Python.start/1` with `agent:`.
  A check passing is no promise: the module can change on disk afterwards, and
  `on_start` can still raise; the agent's own start-failure rule covers that (see
  `:max_start_failures` in `Symbiont.Agent`).
  """

  alias Symbiont.Host

  @typedoc "Why an agent cannot start: the `message` of `check/2`, and the Python `traceback`."
  @type failure :: %{message: String.t(), traceback: String.t()}

  # The options of Symbiont.Host that make a launch: the rest is the host's own.
  @launch [:python, :python_path, :cd, :env, :inherit_env]

  @doc """
  `:ok` when agent `spec` (validated, see `Symbiont.Agent.validate_spec/1`) can start,
  else `{:error, %Symbiont.Error{reason: :cannot_start}}` whose message names the agent,
  its module and class (or Wasm module) and the exception (the last line of its
  traceback, and where in the agent's code it was raised) or the Wasm error; its
  `details` are `%{agent: name, traceback: traceback}`.

  `host_opts` are those of the host that will run it (`Symbiont.Host`: `:python`,
  `:python_path`, `:cd`, `:env`, `:inherit_env`; others are ignored), by default the
  application's.
  """
  @spec check(Symbiont.Agent.spec(), keyword) :: :ok | {:error, Symbiont.Error.t()}
  def check(spec, host_opts \\ []) do
    case Map.fetch!(check_all([spec], host_opts), spec.name) do
      :ok ->
        :ok

      {:error, %{message: message, traceback: traceback}} ->
        {:error,
         Symbiont.Error.new(:cannot_start, message, agent: spec.name, traceback: traceback)}
    end
  end

  @doc """
  Checks `specs` together, in one Python process: for each agent's name, `:ok` or
  `{:error, failure}` (a message as `check/2` gives it, and the traceback).
  """
  @spec check_all([Symbiont.Agent.spec()], keyword) :: %{String.t() => :ok | {:error, failure}}
  def check_all(specs, host_opts \\ [])
  def check_all([], _host_opts), do: %{}

  def check_all(specs, host_opts) when is_list(specs) and is_list(host_opts) do
    case timeout() do
      {:ok, timeout} ->
        wires = specs |> Enum.map(&wire/1) |> Enum.uniq()
        results = run_checks(wires, Keyword.take(host_opts, @launch), timeout)
        Map.new(specs, &{&1.name, verdict(&1, Map.fetch!(results, wire(&1)))})

      {:error, error} ->
        Map.new(specs, &{&1.name, {:error, %{message: Exception.message(error), traceback: ""}}})
    end
  end

  defp timeout, do: Symbiont.Config.fetch(:probe_timeout_ms)

  # What symbiont._probe.check_agent takes: the agent_start spec, without a state.
  defp wire(spec),
    do: %{
      "name" => spec.name,
      "module" => spec.module,
      "class" => spec.class,
      "config" => spec.config
    }

  # In a task that owns (is linked to) the probe's host: if the caller goes, the task
  # finishes and the host goes with it. Each step is bounded (a call by the timeout, the
  # host's stop by its grace), and so is the wait.
  defp run_checks(wires, host_opts, timeout) do
    task =
      Task.Supervisor.async_nolink(Symbiont.TaskSupervisor, fn ->
        probe(wires, host_opts, timeout)
      end)

    bound = length(wires) * (timeout + 10_000) + 15_000

    case Task.yield(task, bound) || Task.shutdown(task, :brutal_kill) do
      {:ok, results} ->
        results

      other ->
        why = "it could not be checked: #{inspect(other, limit: 5)}"
        Map.new(wires, &{&1, {:error, why, ""}})
    end
  end

  # One process for all; after a check that timed out or killed it, a fresh one for the
  # rest (the old one may be stuck, or half-way through an import).
  defp probe([], _host_opts, _timeout), do: %{}

  defp probe(wires, host_opts, timeout) do
    opts = [name: "probe:#{System.unique_integer([:positive])}"] ++ host_opts

    with {:ok, _config} <- Host.validate_options(opts),
         {:ok, host} <- Host.start_link(opts) do
      {done, rest} =
        try do
          check_each(host, wires, timeout, %{})
        after
          stop(host)
        end

      Map.merge(done, probe(rest, host_opts, timeout))
    else
      {:error, %ArgumentError{} = error} ->
        why = "it could not be checked: #{Exception.message(error)}"
        Map.new(wires, &{&1, {:error, why, ""}})

      {:error, reason} ->
        why = "it could not be checked: #{inspect(reason, limit: 5)}"
        Map.new(wires, &{&1, {:error, why, ""}})
    end
  end

  defp check_each(_host, [], _timeout, done), do: {done, []}

  defp check_each(host, [wire | rest], timeout, done) do
    case check_in(host, wire, timeout) do
      {:stuck, verdict} -> {Map.put(done, wire, verdict), rest}
      verdict -> check_each(host, rest, timeout, Map.put(done, wire, verdict))
    end
  end

  defp check_in(host, wire, timeout) do
    case Host.call(host, "symbiont._probe", "check_agent", [wire], timeout) do
      {:ok, nil} ->
        :ok

      {:ok, %{"type" => type, "message" => message} = error} ->
        {:error, describe(type, message, error["where"]), error["traceback"] || ""}

      {:error, :timeout} ->
        {:stuck,
         {:error,
          "its check did not finish within #{timeout} ms (:probe_timeout_ms): its module's " <>
            "import or its class's __init__ did not return", ""}}

      {:error, {:host_down, reason}} ->
        {:stuck,
         {:error,
          "it killed the Python process that checked it: #{Host.format_crash_reason(reason)}",
          crash_output(host)}}

      {:error, %Symbiont.Python.Error{type: type, message: message, traceback: tb}} ->
        {:error, "#{type}: #{message}", tb || ""}

      {:error, other} ->
        {:error, "it could not be checked: #{inspect(other, limit: 5)}", ""}
    end
  end

  defp stop(host) do
    GenServer.stop(host, :normal, 10_000)
  catch
    :exit, _ -> :ok
  end

  defp describe("symbiont.wasm.WasmError", message, _where), do: message
  defp describe(type, message, where) when where in [nil, ""], do: "#{type}: #{message}"
  defp describe(type, message, where), do: "#{type}: #{message} (at #{where})"

  defp crash_output(host) do
    case Host.info(host) do
      {:ok, %{last_crash: %{logs: [_ | _] = logs}}} -> Enum.join(logs, "\n")
      _ -> ""
    end
  end

  defp verdict(_spec, :ok), do: :ok

  defp verdict(spec, {:error, why, traceback}),
    do:
      {:error,
       %{
         message: "agent #{inspect(spec.name)}: #{logic(spec)} cannot start: #{why}",
         traceback: traceback
       }}

  defp logic(%{wasm: wasm}) when is_binary(wasm),
    do: "the :wasm module #{inspect(Path.relative_to_cwd(wasm))}"

  defp logic(spec), do: "#{spec.module}:#{spec.class}"
end
