defmodule Symbiont.Agent.StartFailures do
  @moduledoc false
  # The start-failure rule of an agent ("Agents that cannot start" in Symbiont.Agent), as
  # pure functions of its failed starts in a row; Symbiont.Agent.Server applies them.

  # A failed start is tried again after 100 ms, then 200 ms, 400 ms... and every 5 s at
  # most, until :max_start_failures in a row quarantine the agent.
  @retry_ms 100
  @retry_max_ms 5_000

  @doc """
  What failed start number `failures` of a row leads to, for an agent allowed `max` in a
  row, `previous` being the error of the failed start before it: `:quarantine`, or
  `{:retry, delay_ms, tell?}`, `tell?` false for the same error as the one before (it was
  said already).

      iex> Symbiont.Agent.StartFailures.next(1, 3, nil, %{"type" => "E", "message" => "m"})
      {:retry, 100, true}
      iex> Symbiont.Agent.StartFailures.next(2, 3, %{"type" => "E", "message" => "m"}, %{"type" => "E", "message" => "m"})
      {:retry, 200, false}
      iex> Symbiont.Agent.StartFailures.next(3, 3, nil, %{"type" => "E", "message" => "m"})
      :quarantine
  """
  @spec next(pos_integer, pos_integer, map | nil, map) ::
          :quarantine | {:retry, pos_integer, boolean}
  def next(failures, max, _previous, _error) when failures >= max, do: :quarantine

  def next(failures, _max, previous, error) do
    delay = min(@retry_max_ms, @retry_ms * Integer.pow(2, min(failures - 1, 16)))
    {:retry, delay, failures == 1 or not same?(previous, error)}
  end

  defp same?(%{"type" => t, "message" => m}, %{"type" => t, "message" => m}), do: true
  defp same?(_, _), do: false

  @doc "Why an agent whose start failed `failures` times in a row is quarantined."
  @spec reason(pos_integer, map) :: String.t()
  def reason(failures, error),
    do: "could not start #{failures} times in a row: #{describe(error)}"

  @doc ~S'An error map (PROTOCOL.md §5) in one line: `"Type: message"`.'
  @spec describe(map) :: String.t()
  def describe(error), do: "#{error["type"]}: #{error["message"]}"

  @doc "The traceback of an error map, on lines of its own after the line it ends; or none."
  @spec traceback(map) :: String.t()
  def traceback(%{"traceback" => tb}) when is_binary(tb) and tb != "",
    do: "\n" <> String.trim_trailing(tb)

  def traceback(_error), do: ""

  @doc """
  The error of a start during which the agent's host process died (`crash` as its owner
  tells it: `message`, the process's last output `logs`).
  """
  @spec host_down(map) :: map
  def host_down(crash),
    do: %{
      "type" => "HostDown",
      "message" => "its host process #{crash.message} while it started",
      "traceback" => Enum.join(crash.logs, "\n")
    }
end
