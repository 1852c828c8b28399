defmodule Symbiont.Host.Logs do
  @moduledoc """
  What a host's process prints (log frames, PROTOCOL.md §7), in the node's log: each line
  within the output limit (`Symbiont.Host.Output`, applied at twice the host's rates),
  with the host's (and, for a host of one agent, the agent's) name in the metadata; and
  the last `:log_lines` of them, kept for the crash report of the process.

  Every function that takes the owner's state runs in the owner's process.
  """

  alias Symbiont.Host.{Output, Protocol, Slots, State}

  @doc """
  A line the process printed. It is logged within the output limit, and kept, cut to its
  max_line, among the last lines of a crash report either way. A logging record's
  fields (§7: checked by `Symbiont.Host.Protocol`) count in its bytes, and go in the
  Logger metadata under the one key `:python`, as a map with fixed atom keys: the host's
  names stay strings, never atoms (the atom table is not the host's to fill).
  """
  @spec line(State.t(), Logger.level(), String.t(), map | nil) :: State.t()
  def line(state, level, message, fields \\ nil) do
    message = Output.cut(message, state.output)
    now = System.monotonic_time(:millisecond)
    size = byte_size(message) + if(fields, do: Protocol.fields_cost(fields), else: 0)

    output =
      case Output.take(state.output, size, now) do
        {:ok, output} ->
          Symbiont.Host.log(level, message, python_meta(fields, meta(state)))
          output

        {:first_drop, output} ->
          Process.send_after(self(), :output_summary, output.limit.summary_ms)
          output

        {:drop, output} ->
          output
      end

    state = %{state | output: output}
    keep = state.config.log_lines
    logs = :queue.in(message, state.logs)

    if state.log_count >= keep,
      do: %{state | logs: :queue.drop(logs)},
      else: %{state | logs: logs, log_count: state.log_count + 1}
  end

  defp python_meta(nil, meta), do: meta

  defp python_meta(fields, meta) do
    python = %{
      logger: Map.get(fields, "logger"),
      level: Map.get(fields, "level"),
      extra: Map.get(fields, "extra", %{})
    }

    [{:python, python} | meta]
  end

  @doc "A `fatal` frame: the process could not start; said once, and kept as a line."
  @spec fatal(State.t(), map) :: State.t()
  def fatal(state, error) do
    Symbiont.Host.log(
      :error,
      "host #{inspect(state.name)} could not start: #{error["type"]}: #{error["message"]}",
      meta(state)
    )

    line(state, :error, "fatal: " <> to_string(error["message"] || ""))
  end

  @doc "What was dropped over the output limit, said in one line (`:output_summary`)."
  @spec summary(State.t()) :: State.t()
  def summary(state) do
    {text, output} = Output.summary(state.output, System.monotonic_time(:millisecond))
    if text, do: Symbiont.Host.log(:warning, "host #{inspect(state.name)} #{text}", meta(state))
    %{state | output: output}
  end

  @doc "The last lines the process printed, oldest first."
  @spec recent(State.t()) :: [String.t()]
  def recent(state), do: :queue.to_list(state.logs)

  @doc "Logger metadata: a host that runs one agent logs with the agent's name too (§7)."
  @spec meta(State.t()) :: keyword
  def meta(state) do
    case Slots.sole_id(state) do
      nil -> [host: state.name]
      id -> [host: state.name, agent: id]
    end
  end

  @doc "The agents of the host, for a log line about it: `\" (agent a)\"`, or `\"\"`."
  @spec agent_suffix(State.t()) :: String.t()
  def agent_suffix(state) do
    case Slots.ids(state) do
      [] -> ""
      [id] -> " (agent #{id})"
      ids -> " (agents #{Enum.join(ids, ", ")})"
    end
  end
end
