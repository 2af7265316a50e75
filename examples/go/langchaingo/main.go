// Command langchaingo is the seed's llm/LangChainGo/main.go, corrected: it talks to a local OpenAI-compatible
// server (llama-server or Ollama) with github.com/tmc/langchaingo, non-streamed and streamed.
//
// What changed from the seed, and why:
//   - openai.New(WithBaseURL, WithToken, WithModel): without WithModel langchaingo sends its default OpenAI model
//     name, which llama-server ignores but Ollama rejects (404 model not found).
//   - a token limit is always sent. langchaingo v0.1.14 sends llms.WithMaxTokens as `max_completion_tokens`;
//     Ollama (v0.24) reads only `max_tokens` and silently ignores the limit. openai.WithLegacyMaxTokensField()
//     sends `max_tokens`, which both servers honour; -max-tokens-field switches between the two to see it.
//   - base URL, key and model from flags, else OPENAI_BASE_URL / OPENAI_API_KEY / LABKIT_MODEL_NAME, else the
//     lab's defaults; usage printed; errors returned to main instead of log.Fatal.
//
// Run:  go run .            (llama-server on :8080)
//
//	go run . -base-url http://localhost:11434/v1 -model smollm2-135m     (Ollama)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/llms/openai"
)

// The lab's defaults: what `labkit up llamacpp` serves.
const (
	DefaultBaseURL = "http://localhost:8080/v1"
	DefaultAPIKey  = "sk-local-placeholder" // servers without --api-key ignore it; langchaingo insists on one
	DefaultModel   = "smollm2-135m"
	DefaultPrompt  = "你好，请问你能做些什么呢?"
)

// Options is everything one run needs; flags override the environment, which overrides the defaults.
type Options struct {
	BaseURL        string
	APIKey         string
	Model          string
	Prompt         string
	MaxTokens      int
	MaxTokensField string // "max_tokens" (both servers) or "max_completion_tokens" (langchaingo's default)
	Seed           int
	Mode           string // "both", "stream" or "chat"
	JSON           bool
	Timeout        time.Duration
}

// Result is what one call produced: the text, why it stopped, and the server's token counts.
type Result struct {
	Mode             string `json:"mode"`
	Content          string `json:"content"`
	StopReason       string `json:"finish_reason"`
	Chunks           int    `json:"chunks"`
	PromptTokens     int    `json:"prompt_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
	TotalTokens      int    `json:"total_tokens"`
	MaxTokensField   string `json:"max_tokens_field"`
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// ParseOptions reads flags (args without the program name) on top of the environment and the lab's defaults.
func ParseOptions(args []string, stderr io.Writer) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("langchaingo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.BaseURL, "base-url", envOr("OPENAI_BASE_URL", DefaultBaseURL), "OpenAI-compatible base URL, ending in /v1 (env OPENAI_BASE_URL)")
	fs.StringVar(&o.APIKey, "api-key", envOr("OPENAI_API_KEY", DefaultAPIKey), "API key; a placeholder unless the server runs with --api-key (env OPENAI_API_KEY)")
	fs.StringVar(&o.Model, "model", envOr("LABKIT_MODEL_NAME", DefaultModel), "model name; Ollama needs the real one (env LABKIT_MODEL_NAME)")
	fs.StringVar(&o.Prompt, "prompt", DefaultPrompt, "user message")
	fs.IntVar(&o.MaxTokens, "max-tokens", 64, "token limit sent with every request")
	fs.StringVar(&o.MaxTokensField, "max-tokens-field", "max_tokens", "JSON field carrying the limit: max_tokens or max_completion_tokens")
	fs.IntVar(&o.Seed, "seed", 42, "sampling seed")
	fs.StringVar(&o.Mode, "mode", "both", "chat, stream or both")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object per result instead of text")
	fs.DurationVar(&o.Timeout, "timeout", 60*time.Second, "timeout for the whole run")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch o.Mode {
	case "both", "stream", "chat":
	default:
		return o, fmt.Errorf("-mode must be chat, stream or both, not %q", o.Mode)
	}
	if o.MaxTokensField != "max_tokens" && o.MaxTokensField != "max_completion_tokens" {
		return o, fmt.Errorf("-max-tokens-field must be max_tokens or max_completion_tokens, not %q", o.MaxTokensField)
	}
	if o.MaxTokens <= 0 {
		return o, errors.New("-max-tokens must be positive: a local model may otherwise generate until the context is full")
	}
	return o, nil
}

// NewLLM points langchaingo's OpenAI client at our server, with our key and model.
func NewLLM(o Options) (*openai.LLM, error) {
	llm, err := openai.New(
		openai.WithBaseURL(o.BaseURL),
		openai.WithToken(o.APIKey),
		openai.WithModel(o.Model),
	)
	if err != nil {
		return nil, fmt.Errorf("configuring langchaingo for %s: %w", o.BaseURL, err)
	}
	return llm, nil
}

// CallOptions are the per-request settings: greedy, seeded, limited, in the field the server reads.
func CallOptions(o Options) []llms.CallOption {
	opts := []llms.CallOption{
		llms.WithTemperature(0), // langchaingo always sends temperature, so 0 really means greedy
		llms.WithSeed(o.Seed),
		llms.WithMaxTokens(o.MaxTokens), // sent as max_completion_tokens unless ...
	}
	if o.MaxTokensField == "max_tokens" {
		opts = append(opts, openai.WithLegacyMaxTokensField()) // ... this: sent as max_tokens
	}
	return opts
}

// Generate sends the prompt once; with onChunk set it streams and calls onChunk with each piece of text.
func Generate(ctx context.Context, llm llms.Model, o Options, onChunk func(string)) (Result, error) {
	msgs := []llms.MessageContent{llms.TextParts(llms.ChatMessageTypeHuman, o.Prompt)}
	res := Result{Mode: "chat", MaxTokensField: o.MaxTokensField}
	opts := CallOptions(o)
	if onChunk != nil {
		res.Mode = "stream"
		opts = append(opts, llms.WithStreamingFunc(func(_ context.Context, chunk []byte) error {
			res.Chunks++
			onChunk(string(chunk))
			return nil
		}))
	}
	resp, err := llm.GenerateContent(ctx, msgs, opts...)
	if err != nil {
		return res, fmt.Errorf("%s request to %s (model %q) failed; is the server up (`labkit up`) and is the "+
			"model name right?: %w", res.Mode, o.BaseURL, o.Model, err)
	}
	if len(resp.Choices) == 0 {
		return res, fmt.Errorf("the server at %s answered with no choices", o.BaseURL)
	}
	c := resp.Choices[0]
	res.Content, res.StopReason = c.Content, c.StopReason
	if res.Mode == "chat" {
		res.Chunks = 1
	}
	res.PromptTokens = intInfo(c.GenerationInfo, "PromptTokens")
	res.CompletionTokens = intInfo(c.GenerationInfo, "CompletionTokens")
	res.TotalTokens = intInfo(c.GenerationInfo, "TotalTokens")
	return res, nil
}

// intInfo reads a token count from langchaingo's untyped GenerationInfo map.
func intInfo(info map[string]any, key string) int {
	switch v := info[key].(type) {
	case int:
		return v
	case int64:
		return int(v)
	case float64:
		return int(v)
	}
	return 0
}

func report(w io.Writer, r Result, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(r)
	}
	if r.Mode == "chat" {
		fmt.Fprintln(w, r.Content)
	} else {
		fmt.Fprintln(w)
	}
	_, err := fmt.Fprintf(w, "finish_reason=%s chunks=%d usage: prompt=%d completion=%d total=%d (limit sent as %s)\n",
		r.StopReason, r.Chunks, r.PromptTokens, r.CompletionTokens, r.TotalTokens, r.MaxTokensField)
	return err
}

// Run is main without the exit: parse, call, print; every failure comes back as an error.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := ParseOptions(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	llm, err := NewLLM(o)
	if err != nil {
		return err
	}
	if !o.JSON {
		fmt.Fprintf(stdout, "base URL %s, model %s\n", o.BaseURL, o.Model)
	}
	if o.Mode != "stream" {
		if !o.JSON {
			fmt.Fprintln(stdout, "== GenerateContent ==")
		}
		res, err := Generate(ctx, llm, o, nil)
		if err != nil {
			return err
		}
		if err := report(stdout, res, o.JSON); err != nil {
			return err
		}
	}
	if o.Mode != "chat" {
		var onChunk func(string)
		if o.JSON {
			onChunk = func(string) {}
		} else {
			fmt.Fprintln(stdout, "== GenerateContent + WithStreamingFunc ==")
			onChunk = func(s string) { fmt.Fprint(stdout, s) }
		}
		res, err := Generate(ctx, llm, o, onChunk)
		if err != nil {
			return err
		}
		if err := report(stdout, res, o.JSON); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	if err := Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
