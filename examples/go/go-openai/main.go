// Command go-openai is the seed's llm/OpenAIGo/main.go, corrected: it talks to a local OpenAI-compatible
// server (llama-server or Ollama) with github.com/sashabaranov/go-openai, streamed and non-streamed.
//
// What changed from the seed, and why:
//   - openai.DefaultConfig(key) + BaseURL instead of openai.DefaultAnthropicConfig: the Anthropic config sends
//     no Authorization header and appends ?api-version=..., so a server started with --api-key answers 401.
//   - base URL, key and model come from flags, else OPENAI_BASE_URL / OPENAI_API_KEY / LABKIT_MODEL_NAME,
//     else the lab's defaults; Ollama needs the real model name (llama-server ignores it).
//   - max_tokens is always sent, usage is printed, errors are returned to main instead of log.Fatal.
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
	"net/http"
	"os"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// The lab's defaults: what `labkit up llamacpp` serves.
const (
	DefaultBaseURL = "http://localhost:8080/v1"
	DefaultAPIKey  = "sk-local-placeholder" // servers without --api-key ignore it; clients insist on one
	DefaultModel   = "smollm2-135m"
	DefaultPrompt  = "你好，请你介绍一下自己"
)

// NearGreedyTemperature stands in for 0, which go-openai drops (`omitempty`). Not math.SmallestNonzeroFloat32,
// the usual advice: 1/1e-45 overflows and Ollama v0.24's runner dies on it (HTTP 500 "model runner has
// unexpectedly stopped"); llama-server survives it. 0.01 is greedy in practice on both.
const NearGreedyTemperature = 0.01

// Options is everything one run needs; flags override the environment, which overrides the defaults.
type Options struct {
	BaseURL    string
	APIKey     string
	Model      string
	Prompt     string
	MaxTokens  int
	Seed       int
	Mode       string // "both", "stream" or "chat"
	SeedConfig bool   // use the seed's DefaultAnthropicConfig (to see it fail against a keyed server)
	JSON       bool
	Timeout    time.Duration
}

// Result is what one call produced: the text, why it stopped, and the server's token counts.
type Result struct {
	Mode         string       `json:"mode"`
	Model        string       `json:"model"`
	Content      string       `json:"content"`
	FinishReason string       `json:"finish_reason"`
	Chunks       int          `json:"chunks"`
	Usage        openai.Usage `json:"usage"`
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
	fs := flag.NewFlagSet("go-openai", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.BaseURL, "base-url", envOr("OPENAI_BASE_URL", DefaultBaseURL), "OpenAI-compatible base URL, ending in /v1 (env OPENAI_BASE_URL)")
	fs.StringVar(&o.APIKey, "api-key", envOr("OPENAI_API_KEY", DefaultAPIKey), "API key; a placeholder unless the server runs with --api-key (env OPENAI_API_KEY)")
	fs.StringVar(&o.Model, "model", envOr("LABKIT_MODEL_NAME", DefaultModel), "model name; Ollama needs the real one (env LABKIT_MODEL_NAME)")
	fs.StringVar(&o.Prompt, "prompt", DefaultPrompt, "user message")
	fs.IntVar(&o.MaxTokens, "max-tokens", 64, "max_tokens sent with every request")
	fs.IntVar(&o.Seed, "seed", 42, "sampling seed")
	fs.StringVar(&o.Mode, "mode", "both", "stream, chat or both")
	fs.BoolVar(&o.SeedConfig, "seed-config", false, "use the seed's openai.DefaultAnthropicConfig (broken against --api-key)")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object per result instead of text")
	fs.DurationVar(&o.Timeout, "timeout", 60*time.Second, "timeout for the whole run")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch o.Mode {
	case "both", "stream", "chat":
	default:
		return o, fmt.Errorf("-mode must be stream, chat or both, not %q", o.Mode)
	}
	if o.MaxTokens <= 0 {
		return o, errors.New("-max-tokens must be positive: a local model may otherwise generate until the context is full")
	}
	return o, nil
}

// NewClient is the correct configuration: OpenAI API type (Bearer key) with our base URL.
func NewClient(baseURL, apiKey string) *openai.Client {
	cfg := openai.DefaultConfig(apiKey)
	cfg.BaseURL = baseURL
	cfg.HTTPClient = &http.Client{Timeout: 120 * time.Second}
	return openai.NewClientWithConfig(cfg)
}

// NewSeedClient is the seed's configuration, kept to show its bug: no Authorization header, ?api-version added.
func NewSeedClient(baseURL, apiKey string) *openai.Client {
	return openai.NewClientWithConfig(openai.DefaultAnthropicConfig(apiKey, baseURL))
}

// Request builds the chat request both calls send.
func Request(o Options) openai.ChatCompletionRequest {
	seed := o.Seed
	return openai.ChatCompletionRequest{
		Model:    o.Model,
		Messages: []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleUser, Content: o.Prompt}},
		// MaxTokens, not MaxCompletionTokens: Ollama reads only max_tokens (llama-server reads both).
		MaxTokens: o.MaxTokens,
		// Temperature is `omitempty`: 0 is not sent at all and the server's default (0.8) applies.
		Temperature: NearGreedyTemperature,
		Seed:        &seed,
	}
}

// Chat sends one non-streamed request.
func Chat(ctx context.Context, client *openai.Client, o Options) (Result, error) {
	resp, err := client.CreateChatCompletion(ctx, Request(o))
	if err != nil {
		return Result{}, explain(err, o)
	}
	if len(resp.Choices) == 0 {
		return Result{}, fmt.Errorf("the server at %s answered with no choices", o.BaseURL)
	}
	c := resp.Choices[0]
	return Result{Mode: "chat", Model: resp.Model, Content: c.Message.Content, FinishReason: string(c.FinishReason),
		Chunks: 1, Usage: resp.Usage}, nil
}

// Stream sends one streamed request, calling onDelta with each piece of text as it arrives.
func Stream(ctx context.Context, client *openai.Client, o Options, onDelta func(string)) (Result, error) {
	req := Request(o)
	req.Stream = true
	req.StreamOptions = &openai.StreamOptions{IncludeUsage: true} // usage arrives in a last, choice-less chunk
	stream, err := client.CreateChatCompletionStream(ctx, req)
	if err != nil {
		return Result{}, explain(err, o)
	}
	defer stream.Close()
	res := Result{Mode: "stream"}
	var text strings.Builder
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) { // go-openai reports `data: [DONE]` as io.EOF
			break
		}
		if err != nil {
			return res, fmt.Errorf("reading the stream from %s: %w", o.BaseURL, err)
		}
		res.Chunks++
		res.Model = chunk.Model
		if chunk.Usage != nil {
			res.Usage = *chunk.Usage
		}
		for _, c := range chunk.Choices {
			if c.Delta.Content != "" {
				text.WriteString(c.Delta.Content)
				if onDelta != nil {
					onDelta(c.Delta.Content)
				}
			}
			if c.FinishReason != "" {
				res.FinishReason = string(c.FinishReason)
			}
		}
	}
	res.Content = text.String()
	return res, nil
}

// explain adds what to do to the errors learners actually meet.
func explain(err error, o Options) error {
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	switch {
	case errors.As(err, &apiErr) && apiErr.HTTPStatusCode == http.StatusUnauthorized:
		hint := "the server checks API keys: pass the right one with -api-key or OPENAI_API_KEY"
		if o.SeedConfig {
			hint = "DefaultAnthropicConfig sends no Authorization header; use openai.DefaultConfig(key) and set BaseURL"
		}
		return fmt.Errorf("401 from %s (%s): %w", o.BaseURL, hint, err)
	case errors.As(err, &apiErr) && apiErr.HTTPStatusCode == http.StatusNotFound:
		return fmt.Errorf("404 from %s (does it serve model %q? Ollama needs the exact name): %w", o.BaseURL, o.Model, err)
	case errors.As(err, &reqErr):
		return fmt.Errorf("HTTP %d from %s: %w", reqErr.HTTPStatusCode, o.BaseURL, err)
	default:
		return fmt.Errorf("request to %s failed (is the server up? `labkit up` starts it): %w", o.BaseURL, err)
	}
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
	_, err := fmt.Fprintf(w, "finish_reason=%s chunks=%d usage: prompt=%d completion=%d total=%d\n",
		r.FinishReason, r.Chunks, r.Usage.PromptTokens, r.Usage.CompletionTokens, r.Usage.TotalTokens)
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
	client := NewClient(o.BaseURL, o.APIKey)
	if o.SeedConfig {
		client = NewSeedClient(o.BaseURL, o.APIKey)
	}
	if !o.JSON {
		fmt.Fprintf(stdout, "base URL %s, model %s\n", o.BaseURL, o.Model)
	}
	if o.Mode != "chat" {
		var onDelta func(string)
		if !o.JSON {
			fmt.Fprintln(stdout, "== stream ==")
			onDelta = func(s string) { fmt.Fprint(stdout, s) }
		}
		res, err := Stream(ctx, client, o, onDelta)
		if err != nil {
			return err
		}
		if err := report(stdout, res, o.JSON); err != nil {
			return err
		}
	}
	if o.Mode != "stream" {
		if !o.JSON {
			fmt.Fprintln(stdout, "== chat ==")
		}
		res, err := Chat(ctx, client, o)
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
