defmodule Symbiont.Host.Erlang do
  @moduledoc false
  # Runs what a host asks of the BEAM (PROTOCOL.md §4.1, host → owner): module and
  # function names become atoms only if they already exist, so a host cannot fill the
  # atom table.

  @doc "Applies `module.function(args)`; errors become wire error maps (§5)."
  @spec apply(String.t(), String.t(), list) :: {:ok, term} | {:error, map}
  def apply(module, function, args) do
    with {:ok, mod} <- module_atom(module),
         {:ok, fun} <- existing_atom(function, "function") do
      try do
        {:ok, Kernel.apply(mod, fun, args)}
      catch
        kind, reason -> {:error, error_map(kind, reason, __STACKTRACE__)}
      end
    end
  end

  @doc "Where a `msg` frame goes: a pid, or the pid registered under a name."
  @spec resolve_destination(term) :: {:ok, pid} | :error
  def resolve_destination(pid) when is_pid(pid), do: {:ok, pid}

  def resolve_destination(name) when is_atom(name) and name not in [nil, true, false] do
    case Process.whereis(name) do
      nil -> :error
      pid -> {:ok, pid}
    end
  end

  def resolve_destination(name) when is_binary(name) do
    case existing_atom(name, "name") do
      {:ok, atom} -> resolve_destination(atom)
      {:error, _} -> :error
    end
  end

  def resolve_destination(_), do: :error

  @doc "The wire error map (§5) for an Erlang exception."
  @spec error_map(:error | :exit | :throw, term, Exception.stacktrace()) :: map
  def error_map(kind, reason, stacktrace) do
    base = %{
      "type" => Atom.to_string(kind),
      "message" => Exception.format_banner(kind, reason, stacktrace),
      "traceback" => Exception.format_stacktrace(stacktrace)
    }

    # The original reason travels too when it can be encoded (exceptions are structs and
    # cannot).
    case Symbiont.MsgPack.encode(reason) do
      {:ok, _} -> Map.put(base, "reason", reason)
      {:error, _} -> base
    end
  end

  defp module_atom(<<c, _::binary>> = name) when c in ?A..?Z do
    if String.starts_with?(name, "Elixir."),
      do: existing_atom(name, "module"),
      else: existing_atom("Elixir." <> name, "module")
  end

  defp module_atom(name), do: existing_atom(name, "module")

  defp existing_atom(name, what) do
    {:ok, String.to_existing_atom(name)}
  rescue
    ArgumentError ->
      {:error,
       %{"type" => "error", "message" => "unknown #{what} #{inspect(name)}", "traceback" => ""}}
  end
end
